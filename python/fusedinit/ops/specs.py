"""Distribution specs for fusedinit.init_many_: validated at construction, so a bad value is
reported before any tensor is touched."""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Optional

import torch

from .kinds import CONSTANT, NORMAL, TRUNC_NORMAL, UNIFORM
from .seed import check_u64

# Largest double that rounds to a finite float32 (FLT_MAX plus just under half an ulp).
_F32_LIMIT = 3.4028235677973366e38


def _float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _real(name: str, value) -> float:
    x = _float(name, value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if abs(x) >= _F32_LIMIT:
        raise ValueError(f"{name} = {x} overflows float32, in which fusedinit computes")
    return x


def _bound(name: str, value) -> float:
    """A truncation bound: any real number but nan; -inf / +inf leave that side open (as
    torch.nn.init.trunc_normal_ takes them: a normal, or a half-normal with one of them)."""
    x = _float(name, value)
    if math.isnan(x):
        raise ValueError(f"{name} must not be nan")
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


def on_stream(spec, stream: int):
    """`spec` drawing from `stream` (a u64), without running the checks again: no field that
    `_finish` derives depends on the stream, so only `stream` differs. The model layer gives
    every queued parameter its own stream; dataclasses.replace costs ~5 us, this ~0.5."""
    if not 0 <= stream < 1 << 64:
        raise ValueError(f"stream must be in [0, 2**64), got {stream}")
    new = object.__new__(type(spec))
    new.__dict__.update(spec.__dict__)
    new.__dict__["stream"] = stream
    return new


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


def _f32_inward(x: float, up: bool) -> float:
    """x rounded to float32 towards the inside of a bound: up for a lower bound, down for an
    upper one, so the float32 value never lies outside what the user asked for."""
    y = f32(x)  # (inf for a finite x beyond float32: then the step below gives +-FLT_MAX)
    if (y < x) if up else (y > x):  # one float32 step inward
        bits = struct.unpack("<I", struct.pack("<f", y))[0]
        if bits & 0x7FFFFFFF == 0:
            bits = 0x00000001 if up else 0x80000001
        else:
            grows = (bits >> 31 == 0) == up  # the magnitude grows: positive going up, ...
            bits += 1 if grows else -1
        y = struct.unpack("<f", struct.pack("<I", bits))[0]
    return y


# The quantile's reach (docs/rng.md): the outer tail of the sampled orientation ends where
# Phi(z) = 2^-33 (q = 2^-32, |z| = 6.23), the inner one where 1 - Phi(z) = 2^-24 (the float32
# probability's last step below 1, |z| = 5.33). Truncated mass beyond them would be piled onto
# one value; more than this fraction of it is refused instead.
_OUTER_TAIL, _INNER_TAIL = 2.0**-33, 2.0**-24
_MAX_MASS_BEYOND_REACH = 1e-6


def trunc_normal_params(mean: float, std: float, a: float, b: float) -> list:
    """The six parameters the kernels receive for N(mean, std^2) truncated to [a, b] (docs/rng.md
    section 3), computed once in double precision; raises ValueError naming the bounds when the
    contract cannot sample them. Every value is exactly a float32.

    - The bounds are rounded inward to float32, so values (clamped to them in float32) lie in
      [a, b] exactly in float32 and float64, and in [round(a), round(b)] in 16-bit dtypes.
    - An interval whose mass lies mostly above the mean is sampled as its mirror image with the
      sign of std flipped, so each tail is drawn from its own small probabilities (float32 keeps
      their resolution; 1 - p near 1 would not) and [a, b] and [2 mean - b, 2 mean - a] give
      exact mirror images."""
    lo, hi = _f32_inward(a, up=True), _f32_inward(b, up=False)
    if not lo <= hi:
        raise ValueError(f"no float32 value between the truncation bounds a={a} and b={b}")
    scale = f32(std)
    if std == 0:
        # v = mean for every word; the clamp keeps it inside the bounds.
        if not a <= mean <= b:
            raise ValueError(f"no probability mass between a={a} and b={b} for N({mean}, 0^2)")
        return [f32(mean), scale, lo, hi, 0.0, 1.0]
    alpha, beta = (a - mean) / std, (b - mean) / std
    if alpha + beta > 0:  # mostly above the mean: sample the mirror image, flip the sign
        alpha, beta, scale = -beta, -alpha, -scale
    p_lo, p_hi = normal_cdf(alpha), normal_cdf(beta)
    if not f32(p_lo) < f32(p_hi):
        raise ValueError(
            f"no probability mass between a={a} and b={b} for N({mean}, {std}^2) at float32 "
            f"resolution")
    outer = max(0.0, min(p_hi, _OUTER_TAIL) - p_lo)
    inner = max(0.0, min(normal_cdf(-alpha), _INNER_TAIL) - normal_cdf(-beta))
    beyond = (outer + inner) / (p_hi - p_lo)
    if beyond > _MAX_MASS_BEYOND_REACH:
        raise ValueError(
            f"truncation bounds a={a}, b={b} for N({mean}, {std}^2): {beyond:.3g} of the "
            f"truncated mass lies beyond the reach of fusedinit's normal quantile (6.23 sigma "
            f"in the outer tail; at most {_MAX_MASS_BEYOND_REACH:g} is allowed): move the bounds "
            f"towards the mean")
    return [f32(mean), scale, lo, hi, f32(p_lo), f32(p_hi)]


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
    """N(mean, std^2) truncated to the absolute bounds [a, b], by inverse CDF (no rejection).
    a may be -inf and b +inf (an open side: a=-inf, b=inf is a normal, a=mean, b=inf a
    half-normal); finite bounds beyond float32 act as the largest float32 of their sign."""

    mean: float = 0.0
    std: float = 1.0
    a: float = -2.0
    b: float = 2.0
    stream: int = 0

    def __post_init__(self):
        for name in ("mean", "std"):
            object.__setattr__(self, name, _real(name, getattr(self, name)))
        for name in ("a", "b"):
            object.__setattr__(self, name, _bound(name, getattr(self, name)))
        if self.std < 0:
            raise ValueError(f"std must be >= 0, got {self.std}")
        if self.a >= self.b:
            raise ValueError(f"truncation bounds need a < b, got a={self.a}, b={self.b}")
        trunc_normal_params(self.mean, self.std, self.a, self.b)  # raises if unsampleable
        object.__setattr__(self, "stream", check_u64("stream", self.stream))
        _finish(self)

    kind = TRUNC_NORMAL
    padding_idx = None

    def bound(self) -> float:
        spread = f32(self.std) * Z_MAX
        lo = max(f32(self.a), f32(self.mean) - spread)
        hi = min(f32(self.b), f32(self.mean) + spread)
        return max(abs(lo), abs(hi))

    def params(self):
        # Computed here, once, in double precision, so every backend receives the same float32
        # values (part of the contract, docs/rng.md).
        return trunc_normal_params(self.mean, self.std, self.a, self.b)


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
