"""transformers integration: the patched init pass, fusedinit.from_config, fused_init_weights
and init_module_ against stock transformers (per-parameter rules, statistically), against each
other (bit for bit), one op call per device, loaded weights untouched."""
import math

import pytest
import torch

import fusedinit
from conftest import assert_bitwise_equal

tf = pytest.importorskip("transformers")
from hf_configs import families  # noqa: E402

FAMILIES = families()


@pytest.fixture
def op_calls(monkeypatch):
    """Number of tensors in each fusedinit op call."""
    calls = []
    real = fusedinit._ops.init_

    def spy(tensors, *args):
        calls.append(len(tensors))
        return real(tensors, *args)

    monkeypatch.setattr(fusedinit._ops, "init_", spy)
    return calls


def stock(name, seed=0):
    config, cls = FAMILIES[name]
    torch.manual_seed(seed)
    return cls(config)


def fused(name, seed=1):
    config, cls = FAMILIES[name]
    return fusedinit.from_config(config, model_class=cls, seed=seed)


def assert_same_rules(ours, theirs, name):
    """Each parameter follows the stock rule: constants bit for bit, random tensors with the
    same mean and std (bounds from the sample size) and the same exact zeros."""
    a, b = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert a.keys() == b.keys(), name
    for key in a:
        x, y = a[key].detach().double().flatten(), b[key].detach().double().flatten()
        if torch.all(y == y[0]):
            assert_bitwise_equal(a[key].detach(), b[key].detach(), f"{name} {key} (constant)")
            continue
        n = x.numel()
        sd = float(y.std())
        assert abs(float(x.mean()) - float(y.mean())) < 6 * sd * math.sqrt(2 / n) + 1e-12, f"{name} {key} mean"
        assert abs(float(x.std()) / sd - 1) < 6 / math.sqrt(n) + 0.02, f"{name} {key} std {float(x.std())} vs {sd}"
        assert float(x.abs().max()) <= 1.5 * float(y.abs().max()) + 1e-6 or n < 1000, f"{name} {key} range"
        assert int((x == 0).sum()) == int((y == 0).sum()) or n < 1000, f"{name} {key} zeros"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_from_config_follows_each_models_rules(name, op_calls):
    ours = fused(name)
    assert len(op_calls) == 1, "one op call for the whole model on one device"
    assert type(ours) is FAMILIES[name][1], "the model class is used as is, never subclassed"
    assert_same_rules(ours, stock(name), name)


@pytest.mark.parametrize("name", ["llama", "deepseek_v3", "gpt2", "t5"])
def test_patched_stock_path_equals_from_config(name, op_calls):
    config, cls = FAMILIES[name]
    with fusedinit.patched_transformers(seed=7):
        patched = cls(config)
    assert len(op_calls) == 1
    ours = fusedinit.from_config(config, model_class=cls, seed=7)
    for (k, a), (_, b) in zip(patched.state_dict().items(), ours.state_dict().items()):
        assert_bitwise_equal(a, b, f"{name} {k}")


def test_patch_lifecycle():
    original = tf.PreTrainedModel.initialize_weights
    fusedinit.patch_transformers(seed=3)
    fusedinit.patch_transformers(seed=4)  # idempotent: only the seed changes
    assert fusedinit.hf.is_patched()
    with fusedinit.patched_transformers(seed=5):
        assert fusedinit.hf.is_patched()
    assert fusedinit.hf.is_patched(), "an outer patch survives an inner context"
    fusedinit.unpatch_transformers()
    fusedinit.unpatch_transformers()
    assert tf.PreTrainedModel.initialize_weights is original
    with fusedinit.patched_transformers():
        pass
    assert tf.PreTrainedModel.initialize_weights is original


def test_seed_none_follows_torch_manual_seed():
    config, cls = FAMILIES["llama"]
    with fusedinit.patched_transformers():
        torch.manual_seed(11)
        a = cls(config)
        torch.manual_seed(11)
        b = cls(config)
        c = cls(config)
    assert_bitwise_equal(a.lm_head.weight.detach(), b.lm_head.weight.detach())
    assert not torch.equal(b.lm_head.weight, c.lm_head.weight)


def test_streams_are_parameter_names():
    """A parameter's values are fusedinit.normal_ with the stream of its name: independent of
    init order and of the rest of the model."""
    model = fused("llama", seed=99)
    w = model.model.layers[1].mlp.up_proj.weight
    expected = fusedinit.normal_(torch.empty(w.shape), 0.0, 0.02, seed=99,
                                 stream=fusedinit.param_stream("model.layers.1.mlp.up_proj.weight"))
    assert_bitwise_equal(w.detach(), expected)
    emb = model.model.embed_tokens.weight
    assert (emb[1] == 0).all(), "padding row"


def test_loaded_weights_are_never_overwritten(tmp_path):
    """from_pretrained with missing keys: loaded tensors keep their values, missing ones get
    exactly the values a full init with the same seed gives them."""
    config, cls = FAMILIES["llama"]
    saved = fused("llama", seed=1)
    state = {k: v.clone() for k, v in saved.state_dict().items() if "layers.1.mlp" not in k}
    saved.save_pretrained(tmp_path, state_dict=dict(state))  # it may edit the dict it gets
    with fusedinit.patched_transformers(seed=2):
        loaded = cls.from_pretrained(tmp_path)
    reference = fused("llama", seed=2)
    for k, v in loaded.state_dict().items():
        expected = state[k] if k in state else reference.state_dict()[k]
        assert_bitwise_equal(v, expected, k)


def test_resize_token_embeddings_under_patch():
    config, cls = FAMILIES["llama"]
    with fusedinit.patched_transformers(seed=1):
        model = cls(config)
        old = model.get_input_embeddings().weight.detach().clone()
        model.resize_token_embeddings(config.vocab_size + 8)
    new = model.get_input_embeddings().weight.detach()
    assert_bitwise_equal(new[: old.shape[0]], old)
    assert new.shape[0] == old.shape[0] + 8 and torch.isfinite(new).all()


def test_failed_flush_raises(monkeypatch):
    config, cls = FAMILIES["llama"]

    def broken(*args, **kwargs):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(fusedinit.session, "init_many_", broken)
    with pytest.raises(RuntimeError, match="kernel failed"):
        fusedinit.from_config(config, model_class=cls, seed=1)


def test_deepseek_v3_experts_and_router():
    model = fused("deepseek_v3", seed=3)
    layer = model.model.layers[1].mlp
    for name, t in layer.named_parameters():
        assert torch.isfinite(t).all(), name
    experts = [p for n, p in layer.named_parameters() if "experts" in n]
    assert experts and all(p.dim() == 3 or p.dim() == 2 for p in experts)
    for p in experts:
        assert abs(float(p.std()) - 0.02) < 0.002
    assert (layer.gate.e_score_correction_bias == 0).all()
    assert layer.gate.weight.dtype == torch.float32


def test_fused_init_weights_as_init_weights(op_calls):
    class TinyPreTrained(tf.PreTrainedModel):
        config_class = tf.PretrainedConfig
        base_model_prefix = "tiny"

    class Tiny(TinyPreTrained):
        def __init__(self, config):
            super().__init__(config)
            self.emb = torch.nn.Embedding(100, 16, padding_idx=2)
            self.proj = torch.nn.Linear(16, 16)
            self.norm = torch.nn.LayerNorm(16)
            self.post_init()

    TinyPreTrained._init_weights = fusedinit.hf.fused_init_weights
    config = tf.PretrainedConfig(initializer_range=0.05)
    with fusedinit.patched_transformers():  # batched inside a recording pass only
        torch.manual_seed(4)
        a = Tiny(config)
        assert len(op_calls) == 1, op_calls
        torch.manual_seed(4)
        b = Tiny(config)
    assert_bitwise_equal(a.proj.weight.detach(), b.proj.weight.detach())
    assert (a.emb.weight[2] == 0).all() and (a.proj.bias == 0).all() and (a.norm.weight == 1).all()
    assert abs(float(a.proj.weight.std()) - 0.05) < 0.01


def test_init_module_prefix_matches_the_full_model():
    model = fused("llama", seed=5)
    layer = FAMILIES["llama"][1](FAMILIES["llama"][0]).model.layers[1]
    fusedinit.init_module_(layer, std=0.02, seed=5, prefix="model.layers.1.")
    for k, v in layer.state_dict().items():
        assert_bitwise_equal(v, model.state_dict()["model.layers.1." + k], k)


def test_init_model_cli(tmp_path, capsys):
    from fusedinit.__main__ import main

    config, _ = FAMILIES["llama"]
    config.save_pretrained(tmp_path)
    assert main(["init-model", str(tmp_path / "config.json"), "--dtype", "bfloat16",
                 "--compare-stock"]) == 0
    out = capsys.readouterr().out
    assert "LlamaForCausalLM" in out and "parameters" in out and "speedup" in out


def test_presets_build_on_meta():
    from fusedinit.hf.presets import PRESETS, load_config

    counts = {}
    for name in PRESETS:
        with torch.device("meta"):
            model = tf.AutoModelForCausalLM.from_config(load_config(name))
        counts[name] = sum(p.numel() for p in model.parameters())
    assert 0.7e9 < counts["llama-1b"] < 1.3e9 and 0.7e9 < counts["deepseek-v3-1b"] < 1.3e9, counts


def test_from_config_progress_bar(capsys):
    config, cls = FAMILIES["llama"]
    fusedinit.from_config(config, model_class=cls, seed=1, progress=True)
    assert "fusedinit.from_config" in capsys.readouterr().err


def test_tied_weights_stay_tied():
    config, cls = FAMILIES["gpt2"]
    assert config.tie_word_embeddings
    ours = fused("gpt2")
    assert ours.lm_head.weight is ours.transformer.wte.weight
    with fusedinit.patched_transformers(seed=1):
        patched = cls(config)
    assert patched.lm_head.weight is patched.transformer.wte.weight
    assert_bitwise_equal(patched.lm_head.weight.detach(), ours.lm_head.weight.detach())
