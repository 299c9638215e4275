"""Values a constructor computes before it registers them, for deferred_init.

A constructor often makes a value first and registers it second:
`nn.Parameter(torch.zeros(1, 1, d))`, `nn.Parameter(torch.empty(1, n, d).normal_(std=0.02))`,
`nn.Parameter(torch.ones([]) * math.log(1 / 0.07))`, `nn.Parameter(torch.randn(a, b) * a**-0.5)`.
Under deferred_init the factories that make such values (zeros, ones, full, empty, randn, rand,
normal and their `_like` forms, floating dtypes) make meta tensors instead, whatever device
they were asked for, each with a *rule*: the spec its values follow (a Constant exact in its
dtype, a Normal, a Uniform, ...) or none yet (`empty`). Scalar arithmetic on a whole ruled
tensor (`* c`, `/ c`, `+ c`, `- c`, `c - t`, `-t`, and a whole copy or dtype cast) makes a
ruled tensor whose spec is the affine image of its source's (the same distribution family);
in-place init writes are the engine's queue, as for any tensor. A ruled tensor registered as
a parameter is recorded with its rule under its final name: nothing of its size is allocated.

Any other use of a ruled tensor needs its values: it is *realized* on the spot - computed for
real on the device it was asked for (the CPU when that device does not exist here), with
torch's own generator for a draw, as the code would have done - and the op runs on it. That
is how buffers come out right (`torch.ones(n, n).tril()`, `pe = torch.zeros(n, d);
pe[:, 0::2] = ...`). A value realized from a draw or from `empty` (and whatever is computed
from it) is *tainted*: registered as a parameter it is not a value fusedinit can record, so
materialize_ names it, never guessing."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Optional, Tuple

import torch

from ..ops.specs import Constant, Normal, TruncNormal, Uniform

aten = torch.ops.aten

# A factory's rule for a value nobody has written yet (torch.empty).
UNSET = object()


def exact_constant(value, dtype: torch.dtype) -> Optional[Constant]:
    """Constant(value as `dtype` holds it), or None where no Constant can be: a value beyond
    float32 or not finite, or a float64 value that is not a float32 one (the contract writes
    constants through float32; such a value is computed for real and kept instead)."""
    try:
        held = torch.tensor(value, dtype=dtype).item()
        if dtype == torch.float64 and torch.tensor(held, dtype=torch.float32).item() != held:
            return None
        return Constant(held)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# aten factory -> the rule of what it makes, from (args, kwargs, dtype). The value of `full`
# (and `full_like`) is args[1]: the `*_like` forms take the tensor whose shape they copy as
# args[0] where the others take the size.
_FACTORIES: Dict[object, Callable] = {
    aten.zeros.default: lambda a, k, d: exact_constant(0.0, d),
    aten.ones.default: lambda a, k, d: exact_constant(1.0, d),
    aten.full.default: lambda a, k, d: exact_constant(a[1], d) if _number(a[1]) else None,
    aten.empty.memory_format: lambda a, k, d: UNSET,
    aten.randn.default: lambda a, k, d: Normal(0.0, 1.0),
    aten.rand.default: lambda a, k, d: Uniform(0.0, 1.0),
    aten.normal.float_float: lambda a, k, d: (Normal(a[0], a[1]) if _number(a[0])
                                              and _number(a[1]) and a[1] >= 0 else None),
}
_LIKE = {aten.zeros_like.default: aten.zeros.default, aten.ones_like.default: aten.ones.default,
         aten.full_like.default: aten.full.default,
         aten.empty_like.default: aten.empty.memory_format,
         aten.randn_like.default: aten.randn.default, aten.rand_like.default: aten.rand.default}
_FACTORIES.update({like: _FACTORIES[base] for like, base in _LIKE.items()})


def factory_rule(func, args, kwargs) -> Optional[Tuple[object, torch.dtype, torch.device]]:
    """(rule, dtype, requested device) of a factory call whose value deferred_init keeps on
    meta; None for any other op, a non-floating dtype, an explicit generator (the code asked
    for torch's stream) or arguments no rule fits."""
    make = _FACTORIES.get(func)
    if make is None or kwargs.get("generator") is not None:
        return None
    like = args[0] if func in _LIKE else None
    if func in _LIKE and not isinstance(like, torch.Tensor):
        return None
    dtype = kwargs.get("dtype") or (like.dtype if like is not None else torch.get_default_dtype())
    if not dtype.is_floating_point:
        return None
    device = kwargs.get("device") or (like.device if like is not None else torch.device("cpu"))
    try:
        rule = make(args, kwargs, dtype)
    except (TypeError, ValueError):
        return None
    return None if rule is None else (rule, dtype, torch.device(device))


# -- affine images -----------------------------------------------------------------------------
def _scaled(spec, k: float):
    """The rule of `k * x` for x following `spec`; None if it leaves the family."""
    if isinstance(spec, Normal):
        if spec.padding_idx is not None and k == 0:
            return None
        return Normal(spec.mean * k, spec.std * abs(k), padding_idx=spec.padding_idx)
    if isinstance(spec, Uniform):
        lo, hi = sorted((spec.a * k, spec.b * k))
        return Uniform(lo, hi)
    if isinstance(spec, TruncNormal):
        if k == 0:
            return None
        lo, hi = sorted((spec.a * k, spec.b * k))
        return TruncNormal(spec.mean * k, spec.std * abs(k), lo, hi)
    return None


def _shifted(spec, m: float):
    """The rule of `x + m`; None if it leaves the family (a padding row would stop being 0)."""
    if isinstance(spec, Normal) and spec.padding_idx is None:
        return Normal(spec.mean + m, spec.std)
    if isinstance(spec, Uniform):
        return Uniform(spec.a + m, spec.b + m)
    if isinstance(spec, TruncNormal):
        return TruncNormal(spec.mean + m, spec.std, spec.a + m, spec.b + m)
    return None


def _affine(func, args, kwargs) -> Optional[Tuple[float, float]]:
    """(k, m) when `func(args)` is k * args[0] + m with Python numbers; else None."""
    if func is aten.neg.default:
        return (-1.0, 0.0) if len(args) == 1 and not kwargs else None
    if len(args) != 2 or set(kwargs) - {"alpha"}:
        return None
    other, alpha = args[1], kwargs.get("alpha", 1)
    if not _number(other) or not _number(alpha):
        return None
    if func in (aten.mul.Tensor, aten.mul.Scalar) and not kwargs:
        return (float(other), 0.0)
    if func in (aten.div.Tensor, aten.div.Scalar) and not kwargs and other != 0:
        return (1.0 / float(other), 0.0)
    if func in (aten.add.Tensor, aten.add.Scalar):
        return (1.0, float(other) * alpha)
    if func in (aten.sub.Tensor, aten.sub.Scalar):
        return (1.0, -float(other) * alpha)
    if func in (aten.rsub.Scalar, aten.rsub.Tensor):  # other - alpha * t
        return (-float(alpha), float(other))
    return None


def affine_rule(func, args, kwargs, rule, dtype: torch.dtype):
    """The rule of `func(args)` for args[0] following `rule`, when the op is affine in it with
    Python numbers (`t * c`, `c * t`, `t / c`, `t + c`, `t - c`, `c - t`, `-t`); None if it is
    not such an op or the result leaves every family. A constant is computed as torch
    computes it (one element of `dtype`), so it is exact."""
    km = _affine(func, args, kwargs)
    if km is None or rule is UNSET:
        return None if km is None else UNSET
    if isinstance(rule, Constant):
        one = torch.full((), rule.value, dtype=dtype)
        return exact_constant(func(one, *args[1:], **kwargs).item(), dtype)
    k, m = km
    try:
        out = rule if k == 1 else _scaled(rule, k)
        return out if out is None or m == 0 else _shifted(out, m)
    except (TypeError, ValueError):  # parameters the spec refuses (a bound beyond float32)
        return None


_FLOAT32_OR_WIDER = (torch.float32, torch.float64)


_IN_PLACE = {aten.mul_.Scalar: aten.mul.Scalar, aten.mul_.Tensor: aten.mul.Tensor,
             aten.div_.Scalar: aten.div.Scalar, aten.div_.Tensor: aten.div.Tensor,
             aten.add_.Scalar: aten.add.Scalar, aten.add_.Tensor: aten.add.Tensor,
             aten.sub_.Scalar: aten.sub.Scalar, aten.sub_.Tensor: aten.sub.Tensor}
IN_PLACE_AFFINE = tuple(_IN_PLACE)


def in_place_rule(func, args, kwargs, rule, dtype: torch.dtype):
    """The rule after an in-place `t.mul_(c)`, `div_`, `add_`, `sub_` with a Python number on a
    tensor following `rule`, recorded on meta (no value exists: the rule is the distribution's,
    a constant computed as torch computes it); None if not such an op."""
    out_of_place = _IN_PLACE.get(func)
    return None if out_of_place is None else affine_rule(out_of_place, args, kwargs, rule, dtype)


def cast_rule(rule, source: torch.dtype, dtype: torch.dtype):
    """The rule of a whole copy from `source` to `dtype` (a constant rounded again, as a cast
    rounds it); None when the copy's values are not the rule's in `dtype`: a draw held in 16
    bits widened again (the contract computes in float32 and rounds once, to the target)."""
    if isinstance(rule, Constant):
        return exact_constant(rule.value, dtype)
    if dtype != source and source not in _FLOAT32_OR_WIDER:
        return None
    return rule


# -- realizing ---------------------------------------------------------------------------------
_AVAILABLE: Dict[str, bool] = {"cpu": True, "meta": True}


def here(device) -> torch.device:
    """`device` if this machine has it, else the CPU: a model written for a GPU is deferred on a
    machine without one (what is computed for real is small; materialize_ moves it)."""
    device = torch.device(device)
    known = _AVAILABLE.get(device.type)
    if known is None:
        try:
            torch.empty(0, device=device)
            known = True
        except (RuntimeError, AssertionError):
            known = False
        _AVAILABLE[device.type] = known
    return device if known else torch.device("cpu")


def realize(rule, shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The value a ruled tensor stands for, computed for real on `device` (the CPU when that
    device is not available here) with torch's own generator for a draw."""
    device = here(device)
    t = torch.empty(shape, dtype=dtype, device="cpu" if device.type == "meta" else device)
    with torch.no_grad():
        if isinstance(rule, Constant):
            t.fill_(rule.value)
        elif isinstance(rule, Normal):
            t.normal_(rule.mean, rule.std)
            if rule.padding_idx is not None:
                t[rule.padding_idx].zero_()
        elif isinstance(rule, Uniform):
            t.uniform_(rule.a, rule.b)
        elif isinstance(rule, TruncNormal):
            torch.nn.init.trunc_normal_(t, rule.mean, rule.std, rule.a, rule.b)
    return t


def elementwise(rule) -> bool:
    """Whether every element follows `rule` on its own (a part of such a tensor follows it
    too): a constant or a draw without a padding row."""
    return isinstance(rule, (Constant, Uniform, TruncNormal)) or \
        isinstance(rule, Normal) and rule.padding_idx is None


def without_stream(rule):
    """`rule` with its stream cleared (hashable): what parts of one rule have in common."""
    if isinstance(rule, (Normal, Uniform, TruncNormal)):
        return dataclasses.replace(rule, stream=0)
    return rule


def draws(rule) -> bool:
    """Whether a value realized from `rule` is not a value fusedinit can record: a draw with
    torch's generator, or `empty`'s memory."""
    return not isinstance(rule, Constant)


__all__ = ["UNSET", "here", "elementwise", "without_stream", "factory_rule", "affine_rule",
           "in_place_rule", "IN_PLACE_AFFINE", "cast_rule", "realize", "draws",
           "exact_constant"]
