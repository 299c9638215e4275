"""transformers integration: the patched init pass, fusedinit.from_config, fused_init_weights
and init_module_ against stock transformers (per-parameter rules, statistically), against each
other (bit for bit), one op call per device, loaded weights untouched."""

import pytest
import torch

import fusedinit
from conftest import assert_bitwise_equal
from hf_rules import check_sample_follows, stock_with_rules

tf = pytest.importorskip("transformers")
from hf_configs import families  # noqa: E402

FAMILIES = families()




def stock(name, seed=0):
    """The stock model and the rule transformers applied to each of its parameters."""
    config, cls = FAMILIES[name]
    return stock_with_rules(cls, config, seed)


def fused(name, seed=1):
    config, cls = FAMILIES[name]
    return fusedinit.from_config(config, model_class=cls, seed=seed)


def expected_values(rule, shape, dtype, seed, name):
    """The contract's values of a parameter following `rule`: its stream is the hash of its
    name, the seed the pass's."""
    stream = fusedinit.param_stream(name)
    spec = {"normal": lambda: fusedinit.Normal(rule.a, rule.b, padding_idx=rule.padding_row,
                                               stream=stream),
            "uniform": lambda: fusedinit.Uniform(rule.a, rule.b, stream=stream),
            "trunc_normal": lambda: fusedinit.TruncNormal(rule.a, rule.b, rule.low, rule.high,
                                                          stream=stream)}[rule.kind]()
    return fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=seed)[0]


def assert_same_rules(ours, theirs, rules, name, seed):
    """Each parameter follows the stock rule: constants bit for bit; random tensors exactly the
    contract's values for the rule transformers applied (distribution, mean, std / bounds,
    padding row, read off the stock pass), after checking that the stock values themselves
    follow that rule (z-bounds from the sample size and the rule's exact moments)."""
    a, b = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert a.keys() == b.keys(), name
    for key in a:
        x, y, rule = a[key].detach(), b[key].detach(), rules[key]
        what = f"{name} {key}"
        if rule is None and torch.all(y == y.flatten()[0]) or rule is not None and rule.kind == "constant":
            assert_bitwise_equal(x, y, f"{what} (constant)")
            continue
        assert rule is not None, f"{what}: the stock pass writes it in a way hf_rules cannot read"
        check_sample_follows(y, rule, f"{what} (stock)")
        assert_bitwise_equal(x, expected_values(rule, x.shape, x.dtype, seed, key), what)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_from_config_follows_each_models_rules(name, op_calls):
    ours = fused(name, seed=1)
    assert len(op_calls) == 1, "one op call for the whole model on one device"
    assert type(ours) is FAMILIES[name][1], "the model class is used as is, never subclassed"
    theirs, rules = stock(name)
    assert_same_rules(ours, theirs, rules, name, seed=1)


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

    monkeypatch.setattr(fusedinit.models.queue, "init_many_", broken)
    with pytest.raises(RuntimeError, match="kernel failed"):
        fusedinit.from_config(config, model_class=cls, seed=1)


def test_deepseek_v3_experts_and_router():
    model = fused("deepseek_v3", seed=3)
    layer = model.model.layers[1].mlp
    for name, t in layer.named_parameters():
        assert torch.isfinite(t).all(), name
    experts = [p for n, p in layer.named_parameters() if "experts" in n]
    assert experts and all(p.dim() == 3 or p.dim() == 2 for p in experts)
    _, rules = stock("deepseek_v3")
    for name, p in layer.named_parameters():
        if "experts" in name:
            check_sample_follows(p, rules["model.layers.1.mlp." + name], name)
    assert (layer.gate.e_score_correction_bias == 0).all()
    assert layer.gate.weight.dtype == torch.float32


def tiny_models():
    """(stock class, class whose _init_weights is fused_init_weights): the base rules only.
    Sizes make the std checkable to a few percent (64,000 and 4,096 random elements)."""
    class TinyPreTrained(tf.PreTrainedModel):
        config_class = tf.PretrainedConfig
        base_model_prefix = "tiny"

    class Tiny(TinyPreTrained):
        def __init__(self, config):
            super().__init__(config)
            self.emb = torch.nn.Embedding(1000, 64, padding_idx=2)
            self.proj = torch.nn.Linear(64, 64)
            self.norm = torch.nn.LayerNorm(64)
            self.post_init()

    class FusedTiny(Tiny):
        _init_weights = fusedinit.hf.fused_init_weights

    return Tiny, FusedTiny


# Each way a config names the std (transformers' base _init_weights reads them in this order).
STD_CONFIGS = [dict(initializer_range=0.05), dict(initializer_range=0.0), dict(init_std=0.07),
               dict(initializer_factor=0.3)]


@pytest.mark.parametrize("kwargs", STD_CONFIGS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_fused_init_weights_as_init_weights(kwargs, op_calls):
    """The std (and every rule) is exactly the one transformers' own base _init_weights uses,
    read off a stock build: the values are statistically that rule (bounds from the sample
    size), one op call, reproducible under torch.manual_seed; and inside a patched pass with
    a fixed seed, bit for bit the contract's values for that rule."""
    stock_cls, fused_cls = tiny_models()
    config = tf.PretrainedConfig(**kwargs)
    theirs, rules = stock_with_rules(stock_cls, config)
    assert rules["emb.weight"].padding_row == 2
    with fusedinit.patched_transformers():  # batched inside a recording pass only
        torch.manual_seed(4)
        a = fused_cls(config)
        assert len(op_calls) == 1, op_calls
        torch.manual_seed(4)
        b = fused_cls(config)
    assert_bitwise_equal(a.proj.weight.detach(), b.proj.weight.detach())
    for key, p in a.named_parameters():
        if rules[key].kind == "constant":
            assert_bitwise_equal(p.detach(), dict(theirs.named_parameters())[key].detach(), key)
        else:
            check_sample_follows(p, rules[key], key)
    with fusedinit.patched_transformers(seed=21):
        patched = fused_cls(config)
    assert_same_rules(patched, theirs, rules, "fused_init_weights", seed=21)


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
