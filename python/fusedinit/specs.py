"""Distribution specs for fusedinit.init_many_: validated at construction, so a bad value is
reported before any tensor is touched."""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Optional

import torch

from ._kinds import CONSTANT, NORMAL, TRUNC_NORMAL, UNIFORM
from ._seed import check_u64

# Largest double that rounds to a finite float32 (FLT_MAX plus just under half an ulp).
_F32_LIMIT = 3.4028235677973366e38


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if abs(x) >= _F32_LIMIT:
        raise ValueError(f"{name} = {x} overflows float32, in which fusedinit computes")
    return x


def _largest_z() -> float:
    """Largest |z| the standard normal transform gives (at the smallest word: ~6.23, docs/rng.md),
    from the reference itself so the bound follows the contract."""
    from . import reference

    words = torch.tensor([0, 0x80000000], dtype=torch.int64)
    return float(reference.standard_normal(words).abs().max())


Z_MAX = _largest_z()


LARGEST = {dtype: torch.finfo(dtype).max
           for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)}


def _finish(spec) -> None:
    """Compute once what every use of the spec needs (a call may pass it for 10^5 tensors)."""
    object.__setattr__(spec, "op_params", tuple(spec.params()))
    object.__setattr__(spec, "largest_value", spec.bound())


def check_dtype(spec, dtype: torch.dtype, where: str) -> None:
    """Refuse a spec whose values would not be finite in `dtype` (torch refuses them too)."""
    largest = LARGEST[dtype]
    bound = spec.largest_value
    if bound > largest:
        raise ValueError(f"{spec} can produce values of magnitude up to {bound:.6g}, beyond the "
                         f"largest finite {dtype} ({largest:.6g}): {where} would get inf")


def f32(x: float) -> float:
    """x rounded to float32 (nearest even), as the kernels see it."""
    return struct.unpack("f", struct.pack("f", x))[0]


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclass(frozen=True)
class Normal:
    """N(mean, std^2); `padding_idx` (negative counts from the end) zeroes that row of dim 0."""

    mean: float = 0.0
    std: float = 1.0
    padding_idx: Optional[int] = None
    stream: int = 0

    def __post_init__(self):
        object.__setattr__(self, "mean", _real("mean", self.mean))
        object.__setattr__(self, "std", _real("std", self.std))
        if self.std < 0:
            raise ValueError(f"std must be >= 0, got {self.std}")
        if self.padding_idx is not None and (isinstance(self.padding_idx, bool)
                                             or not isinstance(self.padding_idx, int)):
            raise TypeError(f"padding_idx must be an int or None, got {type(self.padding_idx).__name__}")
        object.__setattr__(self, "stream", check_u64("stream", self.stream))
        _finish(self)

    kind = NORMAL

    def bound(self) -> float:
        """Largest |value| this spec can produce (float32 rounding is monotone, so the bound
        computed from the float32 parameters holds for the kernels' values)."""
        return abs(f32(self.mean)) + f32(self.std) * Z_MAX

    def params(self):
        return [self.mean, self.std, 0.0, 0.0, 0.0, 0.0]


@dataclass(frozen=True)
class Uniform:
    """U[a, b): b is excluded after rounding to the tensor's dtype (a == b fills a)."""

    a: float = 0.0
    b: float = 1.0
    stream: int = 0

    def __post_init__(self):
        object.__setattr__(self, "a", _real("a", self.a))
        object.__setattr__(self, "b", _real("b", self.b))
        if self.a > self.b:
            raise ValueError(f"uniform bounds need a <= b, got a={self.a}, b={self.b}")
        if abs(f32(self.b) - f32(self.a)) >= _F32_LIMIT:
            raise ValueError(f"uniform range b - a = {self.b - self.a} overflows float32")
        object.__setattr__(self, "stream", check_u64("stream", self.stream))
        _finish(self)

    kind = UNIFORM
    padding_idx = None

    def bound(self) -> float:
        return max(abs(f32(self.a)), abs(f32(self.b)))

    def params(self):
        return [self.a, self.b, 0.0, 0.0, 0.0, 0.0]


@dataclass(frozen=True)
class TruncNormal:
    """N(mean, std^2) truncated to the absolute bounds [a, b], by inverse CDF (no rejection)."""

    mean: float = 0.0
    std: float = 1.0
    a: float = -2.0
    b: float = 2.0
    stream: int = 0

    def __post_init__(self):
        for name in ("mean", "std", "a", "b"):
            object.__setattr__(self, name, _real(name, getattr(self, name)))
        if self.std < 0:
            raise ValueError(f"std must be >= 0, got {self.std}")
        if self.a >= self.b:
            raise ValueError(f"truncation bounds need a < b, got a={self.a}, b={self.b}")
        p_lo, p_hi = self._probabilities()
        if not f32(p_lo) < f32(p_hi):
            raise ValueError(
                f"no probability mass between a={self.a} and b={self.b} for N({self.mean}, "
                f"{self.std}^2) at float32 resolution")
        object.__setattr__(self, "stream", check_u64("stream", self.stream))
        _finish(self)

    kind = TRUNC_NORMAL
    padding_idx = None

    def bound(self) -> float:
        spread = f32(self.std) * Z_MAX
        lo = max(f32(self.a), f32(self.mean) - spread)
        hi = min(f32(self.b), f32(self.mean) + spread)
        return max(abs(lo), abs(hi))

    def _probabilities(self):
        if self.std == 0:
            inside = self.a <= self.mean <= self.b
            return (0.0, 1.0) if inside else (0.0, 0.0)
        return (normal_cdf((self.a - self.mean) / self.std),
                normal_cdf((self.b - self.mean) / self.std))

    def params(self):
        # The CDF bounds are computed here, once, in double precision, so every backend
        # receives the same float32 values (part of the contract, docs/rng.md).
        p_lo, p_hi = self._probabilities()
        return [self.mean, self.std, self.a, self.b, p_lo, p_hi]


@dataclass(frozen=True)
class Constant:
    """Every element equal to `value` (zeros, ones, biases); draws nothing."""

    value: float = 0.0

    def __post_init__(self):
        # The same checks as the other specs' parameters: NaN payloads, infinities and values
        # beyond float32 would differ between backends or overflow.
        object.__setattr__(self, "value", _real("value", self.value))
        _finish(self)

    kind = CONSTANT
    padding_idx = None
    stream = 0

    def bound(self) -> float:
        return abs(f32(self.value))

    def params(self):
        return [self.value, 0.0, 0.0, 0.0, 0.0, 0.0]


SPECS = (Normal, Uniform, TruncNormal, Constant)
