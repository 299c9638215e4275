"""Canaries: the installed torch (and timm, when installed) still does what fusedinit's engine
relies on (torch_internals.py). Each test records what a torch function really issues and
compares it with the pattern the engine itself uses, so a torch upgrade that changes a sampler
fails here, naming what changed, instead of silently unfolding at run time."""
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fusedinit import torch_internals as ti

scipy_stats = pytest.importorskip("scipy.stats")


class _Trace(TorchDispatchMode):
    """(op name, scalar arguments) of every aten op, the incidental ones left out."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = ti.op_name(func)
        if name not in ti.INCIDENTAL_OPS:
            self.ops.append((name, tuple(a for a in args if isinstance(a, (int, float)))))
        return func(*args, **(kwargs or {}))


def trace(fn, *args, **kwargs):
    with _Trace() as t:
        fn(*args, **kwargs)
    return t.ops


def names(ops):
    return tuple(name for name, _ in ops)


def changed(what, expected, got):
    return (f"torch {ti.TORCH_VERSION}: {what} changed (fusedinit checked torch "
            f"{' / '.join(ti.CHECKED_TORCH)}): expected {' -> '.join(expected)}, "
            f"got {' -> '.join(got)}; update torch_internals.py and the engine's fold")


def mass(mean, std, a, b):
    return ti.norm_cdf((b - mean) / std) - ti.norm_cdf((a - mean) / std)


requires_rejection_sampler = pytest.mark.skipif(
    ti.torch_release() <= ti.ERFINV_LAST_RELEASE, reason="torch <= 2.12: the erfinv chain")


@requires_rejection_sampler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_trunc_normal_rejection_branch_is_the_folded_op_sequence(dtype):
    # Bounds 100 std away (torchtitan's / timm's defaults): no draw is ever rejected, so the
    # trace is exactly one round, what the engine answers.
    t = torch.empty(256, dtype=dtype)
    ops = trace(nn.init.trunc_normal_, t, mean=0.0, std=0.02, a=-2.0, b=2.0)
    assert names(ops) == ti.REJECTION_OPS, changed("trunc_normal_'s rejection branch",
                                                   ti.REJECTION_OPS, names(ops))
    # The comparisons take the bounds rounded to the tensor's dtype (the engine checks lo).
    lo = torch.tensor(-2.0, dtype=dtype).item()
    hi = torch.tensor(2.0, dtype=dtype).item()
    assert ops[0][1] == (0.0, 0.02), f"torch {ti.TORCH_VERSION}: normal_ arguments {ops[0][1]}"
    assert ops[1][1] == (lo,) and ops[2][1] == (hi,), (
        f"torch {ti.TORCH_VERSION}: the rejection test compares with {ops[1][1]} / {ops[2][1]}, "
        f"fusedinit expects the bounds rounded to {dtype}: {lo} / {hi}")


@requires_rejection_sampler
@pytest.mark.parametrize("inside", [ti.REJECTION_MASS + 0.01, ti.REJECTION_MASS - 0.01])
def test_trunc_normal_branch_threshold(inside):
    b = float(scipy_stats.norm.ppf(0.5 + inside))  # [0, b] holds `inside` of N(0, 1)
    assert math.isclose(mass(0.0, 1.0, 0.0, b), inside, rel_tol=1e-9)
    torch.manual_seed(0)
    ops = names(trace(nn.init.trunc_normal_, torch.empty(64), mean=0.0, std=1.0, a=0.0, b=b))
    rejection = ti.takes_rejection_branch(0.0, 1.0, 0.0, b)
    assert rejection == (inside > ti.REJECTION_MASS)
    expected = ti.REJECTION_OPS if rejection else ti.UNIFORM_BRANCH_OPS
    assert ops[:len(expected)] == expected, changed(
        f"trunc_normal_'s branch for {inside:.2f} of the mass inside (threshold "
        f"{ti.REJECTION_MASS})", expected, ops[:len(expected) + 2])


@requires_rejection_sampler
def test_the_sampler_is_found_by_its_frame():
    seen = []

    class Probe(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.normal_.default:
                seen.append(ti.sampler_call())
            return func(*args, **(kwargs or {}))

    with Probe():
        nn.init.trunc_normal_(torch.empty(16), mean=0.5, std=0.25, a=-1.0, b=2.0)
    assert len(seen) == 1 and seen[0] is not None, (
        f"torch {ti.TORCH_VERSION}: nn.init.trunc_normal_ no longer runs "
        "torch.nn.init._no_grad_trunc_normal_ (fusedinit finds the sampler by its code object)")
    assert seen[0].arguments == (0.5, 0.25, -1.0, 2.0), (
        f"torch {ti.TORCH_VERSION}: the sampler's locals mean / std / a / b changed")
    assert seen[0].expected == ti.REJECTION_OPS
    assert ti.rejection_bounds(seen[0]) == (-1.0, 2.0)


def test_meta_tensors_return_before_any_op():
    """deferred_init answers `is_meta` inside the sampler because it returns at once on meta."""
    ops = names(trace(nn.init.trunc_normal_, torch.empty(8, device="meta")))
    assert ops == (), changed("trunc_normal_ on a meta tensor", (), ops)


@pytest.mark.parametrize("name", sorted(ti.SINGLE_WRITE_INITS))
def test_one_op_initializers_issue_one_write(name):
    args = {"uniform_": (-0.5, 0.5), "normal_": (0.0, 0.02), "constant_": (0.25,)}.get(name, ())
    t = torch.empty(8, 4)
    ops = names(trace(getattr(nn.init, name), t, *args))
    expected = (ti.SINGLE_WRITE_INITS[name],)
    assert ops == expected, changed(f"nn.init.{name}", expected, ops)


def test_timm_trunc_normal_is_the_erfinv_chain():
    timm_layers = pytest.importorskip("timm.layers")
    import timm.layers.weight_init  # noqa: F401  (what timm_trunc_normal_code looks up)

    assert ti.timm_trunc_normal_code() is not None, (
        "timm.layers.weight_init._trunc_normal_ is gone: fusedinit cannot find timm's sampler")
    ops = names(trace(timm_layers.trunc_normal_, torch.empty(64), std=0.02))
    assert ti.same_chain(ti.ERFINV_OPS, ops), changed("timm's trunc_normal_", ti.ERFINV_OPS, ops)


def test_private_apis_are_there():
    assert ti.dispatch_has_kernel("aten::add.Tensor", "CPU")
    assert not ti.dispatch_has_kernel("aten::add.Tensor", "FPGA")
    strided = ti.strided_shard_type()
    if strided is not None:
        assert hasattr(strided, "local_shard_size_and_offset"), (
            f"torch {ti.TORCH_VERSION}: _StridedShard.local_shard_size_and_offset is gone")
        from torch.distributed.tensor.placement_types import _StridedShardOffsetMode

        assert hasattr(_StridedShardOffsetMode, "ALL")


def test_the_mask_marker_survives_on_an_expanded_tensor():
    mask = ti.mark_all_false(torch.zeros((), dtype=torch.bool).expand(3, 4))
    assert ti.is_marked_all_false(mask)
    assert not ti.is_marked_all_false(torch.zeros(3, 4, dtype=torch.bool))
