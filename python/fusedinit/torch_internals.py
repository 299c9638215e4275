"""Every place fusedinit leans on torch behaviour that torch does not promise: the exact op
sequences of `torch.nn.init` functions the engine folds, their constants, frame identities,
and private APIs. Kept in one module so a torch upgrade has one file to re-check, and so the
canary tests (tests/test_torch_canaries.py) compare the installed torch with the very patterns
the engine uses.

Checked against torch 2.13.0 and 2.14.1 (what CI runs) unless a line says otherwise. A torch
that no longer matches does not give wrong values: the engine then runs the code as written on
the contract's draws and warns (FoldMismatchWarning) that those values are not the contract's
folded spec for that parameter's name.

Bottom layer: imports torch only, so ops/ and models/ may both import it."""
from __future__ import annotations

import dataclasses
import math
import sys
import types
import warnings
from typing import Optional, Tuple

import torch

TORCH_VERSION = torch.__version__
CHECKED_TORCH = ("2.13.0", "2.14.1")


def torch_release() -> Tuple[int, int]:
    """(major, minor) of the installed torch."""
    major, minor = TORCH_VERSION.split("+")[0].split(".")[:2]
    return int(major), int(minor)


class FoldMismatchWarning(UserWarning):
    """Init code that starts like a chain the engine folds (torch's or timm's trunc_normal_)
    did not complete the match: its values are what its ops compute on the contract's draws,
    not the contract's folded spec for that parameter's name. Usually a torch / timm version
    whose sampler changed; issued once per process per function."""


# -- torch.nn.init.trunc_normal_ ---------------------------------------------------------------
# torch >= 2.13: `_no_grad_trunc_normal_(tensor, mean, std, a, b)` takes the rejection branch
# when more than REJECTION_MASS of the normal's mass lies inside [a, b]:
#     lo = tensor.new_tensor(a, device="cpu").item(); hi = ... (b)
#     result = tensor.normal_(mean, std)
#     while True: mask = (result < lo) | (result > hi); if not mask.any(): break; ...
# else a uniform-proposal branch (`tensor.uniform_(a, b)`, then reads of the draws).
# torch <= 2.12 (and timm's copy) used the inverse-CDF (erfinv) chain instead.
REJECTION_MASS = 0.3  # `if p > 0.3:` in torch 2.13.0 / 2.14.1
ERFINV_LAST_RELEASE = (2, 12)  # torch releases whose trunc_normal_ is the erfinv chain

# The aten ops of one rejection-branch call, as a TorchDispatchMode sees them once the bound
# scalars are dropped (INCIDENTAL_OPS), when the first draw is all inside: the engine answers
# the masks without data, so under it the loop always ends after one round.
REJECTION_OPS = ("aten::normal_", "aten::lt.Scalar", "aten::gt.Scalar",
                 "aten::bitwise_or.Tensor", "aten::any")
# The inverse-CDF chain (torch <= 2.12, timm's trunc_normal_): uniform_(2l-1, 2u-1), erfinv_,
# mul_(std * sqrt(2)), add_(mean), clamp_(a, b).
ERFINV_OPS = ("aten::uniform_", "aten::erfinv_", "aten::mul_.Scalar", "aten::add_.Scalar",
              "aten::clamp_")
# A Python number given to mul_ / add_ reaches the dispatcher as either overload: timm 1.0.31's
# `tensor.mul_(std * math.sqrt(2.))` is mul_.Tensor with a wrapped-number tensor under torch
# 2.14.1. The engine's fold (models/folding.py) takes both when the operand is a scalar.
_SCALAR_OVERLOAD = {"aten::mul_.Tensor": "aten::mul_.Scalar",
                    "aten::add_.Tensor": "aten::add_.Scalar"}


def same_chain(expected: Tuple[str, ...], got: Tuple[str, ...]) -> bool:
    """Whether a traced op sequence is `expected`, either overload of a scalar mul_ / add_."""
    return tuple(_SCALAR_OVERLOAD.get(name, name) for name in got) == tuple(expected)
# How the uniform-proposal branch starts (not folded: it reads its draws).
UNIFORM_BRANCH_OPS = ("aten::empty_like", "aten::empty_like", "aten::uniform_")
# Ops that materialize Python scalars (new_tensor(a).item(), bool(mask.any())): no data of the
# initialized tensor is involved.
INCIDENTAL_OPS = frozenset({"aten::lift_fresh", "aten::_local_scalar_dense", "aten::detach",
                            "aten::_to_copy"})

# One-op initializers the engine queues as they are: function -> the one aten write they issue.
SINGLE_WRITE_INITS = {
    "uniform_": "aten::uniform_", "normal_": "aten::normal_", "constant_": "aten::fill_.Scalar",
    "ones_": "aten::fill_.Scalar", "zeros_": "aten::zero_",
    "xavier_uniform_": "aten::uniform_", "xavier_normal_": "aten::normal_",
    "kaiming_uniform_": "aten::uniform_", "kaiming_normal_": "aten::normal_",
}


def op_name(func) -> str:
    """'aten::normal_' / 'aten::lt.Scalar': an OpOverload's name as the patterns spell it."""
    schema = func._schema
    return schema.name + (f".{schema.overload_name}" if schema.overload_name else "")


def norm_cdf(x: float) -> float:
    """As torch's and timm's trunc_normal_ compute it, so their bounds and branch choice are
    recovered bit for bit."""
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0


def takes_rejection_branch(mean: float, std: float, a: float, b: float) -> bool:
    """Whether torch's trunc_normal_(mean, std, a, b) takes its rejection branch."""
    if torch_release() <= ERFINV_LAST_RELEASE or not std > 0:
        return False
    return norm_cdf((b - mean) / std) - norm_cdf((a - mean) / std) > REJECTION_MASS


def trunc_normal_code() -> Optional[types.CodeType]:
    """The code object of torch's sampler (`torch.nn.init._no_grad_trunc_normal_`), looked up
    now: a replaced function (a patched torch) is the one that runs. Its frame identifies the
    sampler: deferred_init answers its `tensor.is_meta` (it returns at once for meta tensors,
    "sampling is a no-op", before any op the engine could record), and the engine reads the
    bounds and the branch from its arguments."""
    fn = getattr(torch.nn.init, "_no_grad_trunc_normal_", None)
    return getattr(fn, "__code__", None)


def timm_trunc_normal_code() -> Optional[types.CodeType]:
    """The code object of timm's inverse-CDF sampler, if timm is imported (never imported
    here)."""
    module = sys.modules.get("timm.layers.weight_init")
    fn = getattr(module, "_trunc_normal_", None)
    return getattr(fn, "__code__", None)


def frame_arguments(frame) -> Optional[Tuple[float, float, float, float]]:
    """(mean, std, a, b) of the trunc_normal_ call running in `frame`, or None."""
    f = frame.f_locals
    try:
        return tuple(float(f[k]) for k in ("mean", "std", "a", "b"))
    except (KeyError, TypeError, ValueError):
        return None


def frame_takes_rejection_branch(frame) -> bool:
    """Whether torch's trunc_normal_ call running in `frame` takes its rejection branch."""
    args = frame_arguments(frame)
    try:
        return args is not None and takes_rejection_branch(*args)
    except ZeroDivisionError:
        return False


@dataclasses.dataclass(frozen=True)
class SamplerCall:
    """A known sampler running up the stack: which one, its arguments, the branch expected.
    (No frame is kept: it would keep the sampler's tensor alive.)"""

    function: str                 # "torch.nn.init.trunc_normal_" / "timm.layers.trunc_normal_"
    arguments: Optional[Tuple[float, float, float, float]]  # (mean, std, a, b)
    expected: Tuple[str, ...]     # REJECTION_OPS / ERFINV_OPS, or () for a branch not folded


def sampler_call(depth: int = 16) -> Optional[SamplerCall]:
    """The known trunc_normal_ sampler on the caller's stack (within `depth` frames), with the
    op pattern its arguments make the engine expect; None when none is running."""
    torch_code, timm_code = trunc_normal_code(), timm_trunc_normal_code()
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        code = frame.f_code
        if code is torch_code:
            arguments = frame_arguments(frame)
            if torch_release() <= ERFINV_LAST_RELEASE:
                expected = ERFINV_OPS
            else:
                expected = REJECTION_OPS if frame_takes_rejection_branch(frame) else ()
            return SamplerCall("torch.nn.init.trunc_normal_", arguments, expected)
        if code is timm_code and timm_code is not None:
            return SamplerCall("timm.layers.trunc_normal_", frame_arguments(frame), ERFINV_OPS)
        frame = frame.f_back
    return None


def rejection_bounds(call: SamplerCall) -> Optional[Tuple[float, float]]:
    """(a, b) as passed to torch's rejection-branch sampler `call`: the bounds its comparisons
    stand for (its `lo` / `hi` are them rounded to the tensor's dtype)."""
    if call.expected != REJECTION_OPS or call.arguments is None:
        return None
    return call.arguments[2], call.arguments[3]


_warned = set()


def warn_fold_mismatch(call: SamplerCall, name: str, got: str) -> None:
    """Once per process per sampler: the chain began like `call.expected` and did not match."""
    if call.function in _warned:
        return
    _warned.add(call.function)
    warnings.warn(
        f"fusedinit: {call.function} (torch {TORCH_VERSION}) did not run the op sequence the "
        f"engine folds (expected {' -> '.join(call.expected)}; {got}); the values of "
        f"{name!r} are what its ops compute on the contract's draws, not the contract's "
        f"TruncNormal for that name. fusedinit checked this against torch "
        f"{' / '.join(CHECKED_TORCH)}.", FoldMismatchWarning, stacklevel=4)


# -- the all-false mask marker ------------------------------------------------------------------
# A stride-0 bool tensor the engine hands out for a comparison it knows is all False (the
# rejection test of a folded trunc_normal_): a Python attribute on the tensor object (tensors
# keep a __dict__ in 2.13 / 2.14), read back when `|` or `.any()` reaches the engine.
_ALL_FALSE_ATTR = "_fusedinit_all_false"


def mark_all_false(mask: torch.Tensor) -> torch.Tensor:
    setattr(mask, _ALL_FALSE_ATTR, True)
    return mask


def is_marked_all_false(x) -> bool:
    return isinstance(x, torch.Tensor) and getattr(x, _ALL_FALSE_ATTR, False)


# -- private APIs -------------------------------------------------------------------------------
def dispatch_has_kernel(op_name_: str, dispatch_key: str) -> bool:
    """Whether the dispatcher has a kernel of `op_name_` for `dispatch_key` (a private query:
    `torch._C._dispatch_has_kernel_for_dispatch_key`, in 2.13 / 2.14)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(op_name_, dispatch_key)


def _storage_cdata(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


# The address of a tensor's StorageImpl - what `t.untyped_storage()._cdata` is - without making
# the Python storage object: torch keeps that object alive with the storage once made, so the
# first ask per tensor costs a GC-tracked allocation (~3 us in a recording of 10^4 parameters,
# and full collections later). `torch._C._storage_address`, in 2.13 / 2.14; the public way
# where it is missing.
storage_address = getattr(torch._C, "_storage_address", _storage_cdata)


def outside_dispatch_modes():
    """A context with this thread's dispatch modes taken off the stack (and put back after):
    deferred_init computes a buffer's real value from a registration hook with its own modes
    active (`torch.utils._python_dispatch._disable_current_modes`, in 2.13 / 2.14)."""
    from torch.utils._python_dispatch import _disable_current_modes
    return _disable_current_modes()


def strided_shard_type():
    """DTensor's `_StridedShard` placement (FSDP2 over TP), or None in a torch without it
    (private: torch.distributed.tensor.placement_types, 2.13 / 2.14)."""
    try:
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:
        return None
    return _StridedShard


def strided_shard_offsets(placement, size: int, mesh_size: int, coordinate: int):
    """(local size, global offsets) of `placement` (a _StridedShard) on a dim of `size`, by
    torch's own `local_shard_size_and_offset(..., _StridedShardOffsetMode.ALL)` (2.13 / 2.14)."""
    from torch.distributed.tensor.placement_types import _StridedShardOffsetMode

    return placement.local_shard_size_and_offset(size, mesh_size, coordinate,
                                                 _StridedShardOffsetMode.ALL)
