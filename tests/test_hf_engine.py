"""The transformers entry points on the engine: fused_init_weights without a profile hook (one
seed per pass, batched only inside a recording), and deferral of a submodel's pass only when
it ends up inside the enclosing model."""
import cProfile
import pstats

import pytest
import torch

import fusedinit
from conftest import assert_bitwise_equal
from fusedinit import param_stream

tf = pytest.importorskip("transformers")


class TinyPreTrained(tf.PreTrainedModel):
    config_class = tf.PretrainedConfig
    base_model_prefix = "tiny"
    _init_weights = fusedinit.hf.fused_init_weights


class Tiny(TinyPreTrained):
    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(100, 16, padding_idx=2)
        self.proj = torch.nn.Linear(16, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.post_init()


class TinyOverride(Tiny):
    """Overrides _init_weights around fused_init_weights: its calls are not batched."""

    def _init_weights(self, module):
        fusedinit.hf.fused_init_weights(self, module)
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.constant_(module.bias, 0.5)


def config():
    return tf.PretrainedConfig(initializer_range=0.05)


def build(cls, seed=4, patched=False):
    torch.manual_seed(seed)
    if patched:
        with fusedinit.patched_transformers():
            return cls(config())
    return cls(config())


def test_unbatched_pass_uses_one_seed():
    """Outside a recording every call writes at once, all with the seed drawn at the pass's
    first call: the values are those of the batched pass."""
    batched, unbatched = build(TinyOverride, patched=True), build(TinyOverride)
    for k, v in unbatched.state_dict().items():
        assert_bitwise_equal(v, batched.state_dict()[k], k)
    assert (unbatched.norm.bias == 0.5).all() and (unbatched.emb.weight[2] == 0).all()
    first = unbatched.proj.weight.detach().clone()
    for module in unbatched.modules():
        module.__dict__.pop("_is_hf_initialized", None)
    torch.manual_seed(5)
    unbatched.initialize_weights()  # a second pass draws its own seed
    assert not torch.equal(unbatched.proj.weight, first)
    torch.manual_seed(5)
    again = fusedinit.ops.seed.resolve_seed(None, None)
    expected = fusedinit.normal_(torch.empty(16, 16), 0.0, 0.05, seed=again,
                                 stream=param_stream("proj.weight"))
    assert_bitwise_equal(unbatched.proj.weight.detach(), expected)


def test_fused_init_weights_under_a_profiler():
    """No profile hook: a profiler keeps working and the writes are all made."""
    expected = build(Tiny)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        model = build(Tiny)
        torch.nn.Linear(2, 2)  # called after the pass: the profiler must still see it
    finally:
        profiler.disable()
    for k, v in model.state_dict().items():
        assert_bitwise_equal(v, expected.state_dict()[k], k)
    names = {func[2] for func in pstats.Stats(profiler).stats}
    assert "reset_parameters" in names and "fused_init_weights" in names


class InnerPreTrained(tf.PreTrainedModel):
    config_class = tf.PretrainedConfig
    base_model_prefix = "inner"


class Inner(InnerPreTrained):
    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(50, 8)
        self.post_init()


class Outer(InnerPreTrained):
    """Builds two Inner models: one registered as a submodule, one kept aside (a list is not a
    submodule) - e.g. a teacher or a reference copy."""

    def __init__(self, config):
        super().__init__(config)
        self.inner = Inner(config)
        self.aside = [Inner(config)]
        self.post_init()


def test_a_model_built_inside_another_but_not_registered_gets_its_own_pass():
    cfg = tf.PretrainedConfig(initializer_range=0.02)
    with fusedinit.patched_transformers(seed=9):
        outer = Outer(cfg)
    registered, aside = outer.inner.emb.weight.detach(), outer.aside[0].emb.weight.detach()
    expected = fusedinit.normal_(torch.empty(50, 8), 0.0, 0.02, seed=9,
                                 stream=param_stream("inner.emb.weight"))
    assert_bitwise_equal(registered, expected, "named in the finished model")
    expected = fusedinit.normal_(torch.empty(50, 8), 0.0, 0.02, seed=9,
                                 stream=param_stream("emb.weight"))
    assert_bitwise_equal(aside, expected, "its own pass, named in its own model")


class Failing(TinyPreTrained):
    """A constructor that raises after PreTrainedModel.__init__: post_init never runs."""

    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(10, 4)
        raise ValueError("bad config")


def test_a_model_whose_constructor_raised_is_not_waited_for():
    """The failed model stays alive (the caught exception's traceback holds it), marked as being
    built; a model built afterwards in the same thread must still get its own fused pass instead
    of deferring it to the dead construction (it would keep torch's constructor init)."""
    cfg = tf.PretrainedConfig(initializer_range=0.05)
    with fusedinit.patched_transformers(seed=11):
        with pytest.raises(ValueError, match="bad config") as failure:
            Failing(cfg)
        model = Tiny(cfg)
    assert failure.value.__traceback__ is not None  # the failed model is still referenced
    expected = fusedinit.normal_(torch.empty(16, 16), 0.0, 0.05, seed=11,
                                 stream=param_stream("proj.weight"))
    assert_bitwise_equal(model.proj.weight.detach(), expected, "initialized by its own pass")
