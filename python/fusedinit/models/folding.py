"""Chain folding: init code often builds one distribution from several in-place ops on a freshly
drawn tensor. Such a chain on a queued tensor is folded into one spec only where the folded
spec's contract values are exactly what the chain would compute from the contract's values of
its first op (or where the chain *is* a distribution, as trunc_normal_'s ops are); an unfinished
chain is kept as deferred ops, replayed on the written values, so nothing is ever approximated.

Recognised: torch's rejection-sampling trunc_normal_ (torch >= 2.13, its branch for more than
30% of the mass inside [a, b]; the bounds read from its frame), the inverse-CDF (erfinv) chain
of torch <= 2.12 and of timm's copy, and `normal_` followed by scalar `mul_` / `add_`. What torch
itself must keep doing for these to hold lives in torch_internals.py."""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ..ops.sharding import is_dtensor
from ..ops.specs import SPECS, Normal, TruncNormal, Uniform
from ..torch_internals import (is_marked_all_false, mark_all_false, norm_cdf, rejection_bounds,
                               sampler_call)
from .constructor_values import IN_PLACE_AFFINE, in_place_rule
from .queue import DeferredOp, InitSession, Pending, tensor_key

aten = torch.ops.aten


# -- chain steps -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Erfinv:
    """`erfinv_()`."""


@dataclasses.dataclass(frozen=True)
class Mul:
    """`mul_(k)` by a Python scalar."""

    k: float


@dataclasses.dataclass(frozen=True)
class Add:
    """`add_(m)` of a Python scalar (alpha 1)."""

    m: float


@dataclasses.dataclass(frozen=True)
class Clamp:
    """`clamp_(lo, hi)`, both Python scalars."""

    lo: float
    hi: float


Step = Union[Erfinv, Mul, Add, Clamp]


def scalar(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def bound(x) -> bool:
    """A bound torch's sampler compares against: a scalar, or an open side (+-inf)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def arg(args, kwargs, index, name, default):
    return args[index] if len(args) > index else kwargs.get(name, default)


def step_of(func, args, kwargs) -> Optional[Step]:
    """The chain step an op is, or None."""
    if func is aten.erfinv_.default and len(args) == 1 and not kwargs:
        return Erfinv()
    if func in (aten.mul_.Tensor, aten.mul_.Scalar) and len(args) == 2 and not kwargs \
            and scalar(args[1]):
        return Mul(float(args[1]))
    if func in (aten.add_.Tensor, aten.add_.Scalar) and len(args) == 2 and scalar(args[1]) \
            and kwargs.get("alpha", 1) == 1:
        return Add(float(args[1]))
    if func is aten.clamp_.default:
        lo, hi = arg(args, kwargs, 1, "min", None), arg(args, kwargs, 2, "max", None)
        if len(args) <= 3 and bound(lo) and bound(hi):  # (open sides: timm's with +-inf)
            return Clamp(float(lo), float(hi))
    return None


# Ops that may continue a chain on a queued tensor (the engine's handler table keys).
CHAIN_OPS = (aten.erfinv_.default, aten.mul_.Tensor, aten.mul_.Scalar, aten.add_.Tensor,
             aten.add_.Scalar, aten.clamp_.default, aten.lt.Scalar, aten.gt.Scalar,
             aten.div_.Tensor, aten.div_.Scalar, aten.sub_.Tensor, aten.sub_.Scalar)


# -- exact folds -------------------------------------------------------------------------------
def _erfinv_chain(u: Uniform, s: float, m: float, a: float, b: float) -> Optional[TruncNormal]:
    """uniform_(2l-1, 2u-1), erfinv_, mul_(std*sqrt(2)), add_(mean), clamp_(a, b) is
    trunc_normal_(mean, std, a, b) when l = Phi((a-mean)/std), u = Phi((b-mean)/std): std is
    recovered from the product exactly, then every bound is checked."""
    if not s > 0:
        return None
    root2 = math.sqrt(2.0)
    guess = s / root2
    for std in (guess, math.nextafter(guess, 0.0), math.nextafter(guess, math.inf)):
        if std * root2 != s:
            continue
        if 2 * norm_cdf((a - m) / std) - 1 == u.a and 2 * norm_cdf((b - m) / std) - 1 == u.b:
            try:
                return TruncNormal(m, std, a, b)
            except (TypeError, ValueError):
                return None
    return None


def _f32(x: float) -> np.float32:
    return np.float32(x)


def _same_probabilities(old: TruncNormal, new: TruncNormal) -> bool:
    return all(_f32(x) == _f32(y) for x, y in zip(old.params()[4:], new.params()[4:]))


def _trunc_scaled(spec: TruncNormal, k: float) -> Optional[TruncNormal]:
    """TruncNormal(0, 1, a, b) then mul_(k) on float32: k * clamp(z, A, B) rounds to
    clamp(R(K z), R(K A), R(K B)) (monotone), the contract's TruncNormal(0, k, k a, k b) when
    its float32 bounds and CDF bounds are those."""
    try:
        new = TruncNormal(0.0, k, k * spec.a, k * spec.b, stream=spec.stream)
    except (TypeError, ValueError):
        return None
    K = _f32(k)
    if _f32(K * _f32(spec.a)) != _f32(new.a) or _f32(K * _f32(spec.b)) != _f32(new.b):
        return None
    return new if _same_probabilities(spec, new) else None


def _trunc_shifted(spec: TruncNormal, m: float) -> Optional[TruncNormal]:
    """TruncNormal(0, s, a, b) then add_(m) on float32: TruncNormal(m, s, a + m, b + m) under
    the same conditions as _trunc_scaled."""
    try:
        new = TruncNormal(m, spec.std, spec.a + m, spec.b + m, stream=spec.stream)
    except (TypeError, ValueError):
        return None
    M = _f32(m)
    if _f32(_f32(spec.a) + M) != _f32(new.a) or _f32(_f32(spec.b) + M) != _f32(new.b):
        return None
    return new if _same_probabilities(spec, new) else None


# Below this scale a product with z could underflow to a signed zero, where the contract's
# `mean + std * z` gives +0.
_SMALLEST_SCALE = 2.0 ** -100

Folded = Optional[Tuple[object, List[DeferredOp]]]


def _after_mul(p: Pending, op: DeferredOp, k: float, kinds: tuple, exact32: bool) -> Folded:
    spec = p.spec
    if isinstance(spec, Uniform) and kinds == (Erfinv,):
        return spec, [*p.ops, op]
    if exact32 and k >= _SMALLEST_SCALE and _f32(k) >= _SMALLEST_SCALE:
        if isinstance(spec, Normal) and spec.padding_idx is None and spec.mean == 0 \
                and spec.std == 1:
            return dataclasses.replace(spec, std=k), []
        if isinstance(spec, TruncNormal) and spec.mean == 0 and spec.std == 1:
            new = _trunc_scaled(spec, k)
            return (new, []) if new is not None else None
    return None


def _after_add(p: Pending, op: DeferredOp, m: float, kinds: tuple, exact32: bool) -> Folded:
    spec = p.spec
    if isinstance(spec, Uniform) and kinds == (Erfinv, Mul):
        return spec, [*p.ops, op]
    if exact32 and isinstance(spec, Normal) and spec.padding_idx is None and spec.mean == 0:
        try:
            return dataclasses.replace(spec, mean=m), []
        except (TypeError, ValueError):
            return None
    if exact32 and isinstance(spec, TruncNormal) and spec.mean == 0:
        new = _trunc_shifted(spec, m)
        return (new, []) if new is not None else None
    return None


def next_state(p: Pending, op: DeferredOp) -> Folded:
    """(spec, ops) after `op.step` on the pending write `p`, or None (not foldable: a
    barrier)."""
    spec, ops, step = p.spec, p.ops, op.step
    kinds = tuple(type(o.step) for o in ops)
    exact32 = p.tensor.dtype == torch.float32 and not ops
    if isinstance(step, Erfinv):
        return (spec, [op]) if isinstance(spec, Uniform) and not ops else None
    if isinstance(step, Mul):
        return _after_mul(p, op, step.k, kinds, exact32)
    if isinstance(step, Add):
        return _after_add(p, op, step.m, kinds, exact32)
    if isinstance(step, Clamp) and isinstance(spec, Uniform) and kinds == (Erfinv, Mul, Add):
        new = _erfinv_chain(spec, ops[1].step.k, ops[2].step.m, step.lo, step.hi)
        if new is not None:
            return dataclasses.replace(new, stream=spec.stream), []
    return None


# -- torch's rejection sampler -----------------------------------------------------------------
def _dtype_round(x: float, dtype: torch.dtype) -> float:
    """x as a tensor of `dtype` holds it (what `tensor.new_tensor(x).item()` gives)."""
    return torch.tensor(x, dtype=dtype).item()


def value_range(spec: TruncNormal, dtype: torch.dtype) -> Tuple[float, float]:
    """Smallest and largest value the contract writes for `spec` in `dtype`: it clamps to the
    float32 bounds, then rounds (monotone)."""
    low = torch.tensor(float(_f32(spec.a)), dtype=torch.float32).to(dtype).item()
    high = torch.tensor(float(_f32(spec.b)), dtype=torch.float32).to(dtype).item()
    return low, high


def torch_trunc_normal(p: Pending, bounds: Optional[tuple], lo: float) -> Optional[TruncNormal]:
    """torch's rejection-sampling trunc_normal_ is `lo = t.new_tensor(a).item()`, the same for
    b, `t.normal_(mean, std)`, then rejection while any `t < lo` or `t > hi`. Seen as exactly
    that on a queued normal - (a, b) read from the running sampler, the first comparison
    against a rounded to the dtype - it is one TruncNormal(mean, std, a, b), whose values all
    lie in [lo, hi]: the rejection test then finds nothing and the loop ends."""
    spec, dtype = p.spec, p.tensor.dtype
    if p.ops or not isinstance(spec, Normal) or spec.padding_idx is not None or bounds is None:
        return None
    a, b = bounds
    if _dtype_round(a, dtype) != lo:
        return None
    try:
        new = TruncNormal(spec.mean, spec.std, a, b, stream=spec.stream)
    except (TypeError, ValueError):
        return None
    low, high = value_range(new, dtype)
    if not (lo <= low and high <= _dtype_round(b, dtype)):
        return None
    return new


def _sampler_bounds() -> Optional[tuple]:
    call = sampler_call()
    return None if call is None else rejection_bounds(call)


def _compare(p: Pending, t: torch.Tensor, func, x: float):
    """(handled, result) for `t < x` / `t > x` on a queued tensor: a normal becomes torch's
    TruncNormal at its first `<`; a comparison no value can satisfy is answered without data."""
    if func is aten.lt.Scalar and isinstance(p.spec, Normal):
        new = torch_trunc_normal(p, _sampler_bounds(), x)
        if new is None:
            return False, None
        p.spec = new
    if isinstance(p.spec, TruncNormal) and not p.ops:
        low, high = value_range(p.spec, p.tensor.dtype)
        if (x <= low) if func is aten.lt.Scalar else (x >= high):
            return True, all_false_like(t)
    return False, None


def fold(session: InitSession, func, args, kwargs):
    """(handled, result) for an op on exactly a queued tensor that continues a foldable chain."""
    t = args[0] if args else None
    if not isinstance(t, torch.Tensor):
        return False, None
    key = tensor_key(t)
    p = session.pending.get(key) if key is not None else None
    if p is None:
        return False, None
    if func in (aten.lt.Scalar, aten.gt.Scalar):
        if len(args) == 2 and not kwargs and bound(args[1]):
            return _compare(p, t, func, float(args[1]))
        return False, None
    if t.device.type == "meta" and not p.ops and func in IN_PLACE_AFFINE:
        # Recorded on meta (deferred_init, record_on_meta_): no value exists, so scalar
        # arithmetic is the distribution's (timm's head_init_scale `mul_`, BEiT's `div_`).
        new = in_place_rule(func, args, kwargs, p.spec, t.dtype)
        if isinstance(new, SPECS):
            p.spec = new
            return True, t
    step = step_of(func, args, kwargs)
    if step is None:
        return False, None
    after = next_state(p, DeferredOp(step, func, args, kwargs))
    if after is None:
        return False, None
    p.spec, p.ops = after
    return True, t


# -- known-false masks -------------------------------------------------------------------------
def all_false_like(t: torch.Tensor) -> torch.Tensor:
    """An all-False mask shaped like `t`. For a plain tensor one stride-0 byte marked as known
    false, so torch's `(t < lo) | (t > hi)` and `.any()` (answered in `known_false_op`) cost
    nothing instead of two full-size bool tensors a parameter; a DTensor gets a real mask
    sharded like it."""
    if is_dtensor(t):
        return torch.zeros_like(t, dtype=torch.bool)
    return mark_all_false(torch.zeros((), dtype=torch.bool, device=t.device).expand(t.shape))


MASK_OPS = (aten.bitwise_or.Tensor, aten.logical_or.default, aten.any.default)


def known_false_op(func, args, kwargs):
    """(handled, result) for `|` of two known-false masks (another one) and `.any()` of one
    (False); anything else on them runs as written on the stride-0 tensor."""
    if func is aten.any.default:
        if len(args) == 1 and is_marked_all_false(args[0]):
            # On meta (deferred_init) the answer is a CPU scalar: the caller tests it with bool().
            device = "cpu" if args[0].device.type == "meta" else args[0].device
            return True, torch.zeros((), dtype=torch.bool, device=device)
        return False, None
    if len(args) == 2 and not kwargs and is_marked_all_false(args[0]) \
            and is_marked_all_false(args[1]) and args[0].shape == args[1].shape:
        return True, all_false_like(args[0])
    return False, None
