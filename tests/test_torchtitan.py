"""torchtitan as a client (no seed checkpoint): its Llama 3 and DeepSeek-V3 `debugmodel`
configs built on meta, `to_empty`, then `with fusedinit.fuse(model, seed=s):
model.init_weights()` - every parameter follows torchtitan's own per-parameter `param_init`
rule (read from the model, not restated here) with the contract's values, in one op call, with
no draw from torch's generator; buffers are what torchtitan computes; sharded runs (FSDP2,
FSDP2 x TP, gloo) equal the single-process model bit for bit (test_torchtitan_distributed)."""
import dataclasses
import functools
import math
import os
import sys

import pytest
import torch
from torch import nn

import fusedinit
from fusedinit import Constant, Normal, TruncNormal, param_stream

sys.path.insert(0, os.path.dirname(__file__))
import torchtitan_workers as tw  # noqa: E402

tw.require_torchtitan()

SEED = 1234
FAMILIES = [pytest.param("llama3", marks=tw.WQKV), "deepseek_v3"]


def bits(t):
    t = t.detach().contiguous()
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def contract(t, spec, name):
    if not isinstance(spec, Constant):
        spec = dataclasses.replace(spec, stream=param_stream(name))
    return fusedinit.init_many_([(torch.empty(t.shape, dtype=t.dtype), spec)], seed=SEED)[0]


def check_moments(name, t, spec):
    """Sample moments within bounds derived from the sample size (6 standard errors), bounds
    respected exactly - a check of the rule independent of the contract's own tests."""
    from scipy import stats

    x = t.detach().double().flatten()
    n = x.numel()
    if isinstance(spec, TruncNormal):
        lo, hi = (spec.a - spec.mean) / spec.std, (spec.b - spec.mean) / spec.std
        dist = stats.truncnorm(lo, hi, loc=spec.mean, scale=spec.std)
        assert x.min() >= torch.tensor(spec.a, dtype=t.dtype) and \
            x.max() <= torch.tensor(spec.b, dtype=t.dtype), name
    else:
        dist = stats.norm(loc=spec.mean, scale=spec.std)
    mean, sd = dist.mean(), dist.std()
    assert abs(float(x.mean()) - mean) < 6 * sd / math.sqrt(n), name
    # Standard error of the sample variance ~ sd^2 * sqrt(2 / n) (kurtosis <= 3 here).
    assert abs(float(x.var()) - sd ** 2) < 6 * sd ** 2 * math.sqrt(2.0 / n), name


@pytest.mark.parametrize("family", FAMILIES)
def test_fuse_init_weights_follows_torchtitan_rules_in_one_op_call(family):
    model = tw.build(family)
    rules = tw.rules(model)
    model.to_empty(device="cpu")
    sentinel = float("nan")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(sentinel)
    with tw.CountOps() as count, fusedinit.fuse(model, seed=SEED):
        model.init_weights(buffer_device=torch.device("cpu"))
    assert count.fused == 1, f"{count.fused} fusedinit op calls"
    assert count.torch_random == 0, "torch's generator drew values"
    seen = 0
    for name, p in model.named_parameters():
        spec = rules[name]
        if spec is None:  # skip_param_init: untouched
            assert torch.isnan(p).all(), name
            continue
        assert torch.equal(bits(p), bits(contract(p, spec, name))), f"{name}: not {spec}"
        if not isinstance(spec, Constant) and p.numel() >= 10_000:
            check_moments(name, p, spec)
            seen += 1
    assert seen >= 10

    # Buffers (rotary tables, MoE counters) are torchtitan's own, computed as written.
    stock = tw.build(family)
    stock.to_empty(device="cpu")
    stock.init_weights(buffer_device=torch.device("cpu"))
    stock_buffers = dict(stock.named_buffers())
    for name, b in model.named_buffers():
        assert torch.equal(b, stock_buffers[name]), name


def test_rules_are_torchtitans_depth_scaled_and_output_ones():
    """The rules read from the model are the ones torchtitan's config registry declares:
    depth-scaled std for the output projections, dim**-0.5 with +-3 std bounds for the head."""
    from torchtitan.models.common.param_init import depth_scaled_std

    model = tw.build("llama3")
    rules = tw.rules(model)
    dim = model.config.dim
    assert rules["lm_head.weight"] == TruncNormal(0.0, dim ** -0.5, -3 * dim ** -0.5,
                                                  3 * dim ** -0.5)
    for i in range(len(model.layers)):
        std = depth_scaled_std(0.02, i)
        assert rules[f"layers.{i}.attention.wo.weight"] == TruncNormal(0.0, std, -2.0, 2.0)
        assert rules[f"layers.{i}.feed_forward.w2.weight"] == TruncNormal(0.0, std, -2.0, 2.0)
        assert rules[f"layers.{i}.attention_norm.weight"] == Constant(1.0)
    assert rules["tok_embeddings.weight"] == Normal(0.0, 1.0)


def test_tied_and_skipped_parameters():
    """Like the 1B config: the embedding skips init and is tied to lm_head, which gets the
    head's rule under the tied tensor's first name; nothing else writes it."""
    from torchtitan.models.common import Embedding
    from torchtitan.models.common.param_init import skip_param_init

    config = tw.config("llama3")
    config = dataclasses.replace(
        config, enable_weight_tying=True,
        tok_embeddings=Embedding.Config(num_embeddings=config.vocab_size,
                                        embedding_dim=config.dim,
                                        param_init={"weight": skip_param_init}))
    with torch.device("meta"):
        model = config.build()
    assert model.tok_embeddings.weight is model.lm_head.weight
    head_rule = tw.rules(model)["tok_embeddings.weight"]  # the tied tensor's first name
    assert isinstance(head_rule, TruncNormal)
    model.to_empty(device="cpu")  # unties them (one tensor per module) ...
    with tw.CountOps() as count, fusedinit.fuse(model, seed=SEED):
        model.init_weights(buffer_device=torch.device("cpu"))  # ... init_states re-ties
    assert model.tok_embeddings.weight is model.lm_head.weight
    # Named when the block opened, when lm_head.weight was its own tensor.
    assert torch.equal(bits(model.lm_head.weight),
                       bits(contract(model.lm_head.weight, head_rule, "lm_head.weight")))
    assert count.fused == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_materialize_with_init_weights_equals_fuse(family):
    """materialize_(init=...) is to_empty + fuse + init in one call: the same values."""
    a = tw.build(family)
    a.to_empty(device="cpu")
    with fusedinit.fuse(a, seed=SEED):
        a.init_weights(buffer_device=torch.device("cpu"))
    b = tw.build(family)
    fusedinit.materialize_(b, device="cpu", seed=SEED,
                           init=lambda m: m.init_weights(buffer_device=torch.device("cpu")))
    for (n1, x), (n2, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert n1 == n2 and torch.equal(x, y), n1


def test_materialize_without_init_names_what_torchtitan_leaves_to_init_weights():
    """torchtitan's modules initialize in init_weights(), not reset_parameters(): materialize_
    without init= says which parameters nothing initialized."""
    model = tw.build("llama3")
    with pytest.raises(RuntimeError, match=r"left uninitialized: .*layers\.0\."):
        fusedinit.materialize_(model, device="cpu", seed=SEED)
