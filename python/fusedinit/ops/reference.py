"""The random-stream contract (docs/rng.md) in plain PyTorch: the oracle every backend is
compared with, bit for bit, and the ``backend="reference"`` implementation.

uint32 arithmetic is emulated in int64 tensors; float32 steps are separate eager torch ops,
each rounded once, in the order the contract gives; the contract's fused multiply-adds are
computed exactly (fma_f32). Slow, short and meant to be read.
"""
from __future__ import annotations

import torch

from . import normal_table
from .kinds import CONSTANT, NORMAL, TRUNC_NORMAL, UNIFORM

# The version of the contract this module implements (docs/rng.md "Version"): values for a
# given seed and name never change within it.
CONTRACT_VERSION = 1

M32 = 0xFFFFFFFF
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def _mulhilo(a: torch.Tensor, m: int):
    """(hi, lo) 32-bit halves of a * m, for a in [0, 2^32) and a 32-bit constant m."""
    p_lo = a * (m & 0xFFFF)  # < 2^48: exact in int64
    p_hi = a * (m >> 16)
    s = p_lo + ((p_hi & 0xFFFF) << 16)
    return ((p_hi >> 16) + (s >> 32)) & M32, s & M32


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Random123's Philox4x32-10 on int64 tensors holding uint32 values; returns 4 tensors."""
    for r in range(10):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & M32, (k1 + PHILOX_W1) & M32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def stream_words(indices: torch.Tensor, seed: int, stream: int) -> torch.Tensor:
    """The 32-bit word (as int64) of each logical element index."""
    group = indices >> 2
    c0, c1 = group & M32, group >> 32
    c2 = torch.full_like(group, stream & M32)
    c3 = torch.full_like(group, stream >> 32)
    words = torch.stack(philox4x32_10(c0, c1, c2, c3, seed & M32, seed >> 32), dim=-1)
    return words.gather(-1, (indices & 3).unsqueeze(-1)).squeeze(-1)


def f32_from_bits(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u >= 2**31, u - 2**32, u).to(torch.int32).view(torch.float32)


def bits_from_f32(f: torch.Tensor) -> torch.Tensor:
    return f.contiguous().view(torch.int32).to(torch.int64) & M32


def _f32(x: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32, device=like.device)


def fma_f32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a * b + c for float32 tensors with a single rounding to nearest even (IEEE fma).

    The float64 product of two float32 is exact (48 significant bits). The float64 sum is
    made round-to-odd - nearest, then moved to the odd neighbour when inexact and even - which
    keeps the information a second rounding needs: rounding it to float32 (53 >= 24 + 2 bits)
    is then the correctly rounded result, ties, subnormals and overflow included."""
    a, b, c = torch.broadcast_tensors(a, b, c)
    p = a.double() * b.double()
    c64 = c.double()
    s = p + c64
    bb = s - p
    e = (p - (s - bb)) + (c64 - bb)  # p + c == s + e exactly (TwoSum); finite when s is
    bits = s.view(torch.int64)
    inexact_even = (e != 0) & ((bits & 1) == 0) & torch.isfinite(s)
    step = torch.where((e > 0) == (s > 0), 1, -1)  # one ulp towards the exact sum
    return torch.where(inexact_even, bits + step, bits).view(torch.float64).float()


_TABLES: dict = {}


def _coefficients(device) -> torch.Tensor:
    key = str(device)
    if key not in _TABLES:
        bits = torch.tensor(normal_table.COEFFS, dtype=torch.int64, device=device)
        _TABLES[key] = f32_from_bits(bits)
    return _TABLES[key]


def half_normal_quantile(octave: torch.Tensor, mant23: torch.Tensor) -> torch.Tensor:
    """z = Phi^-1(1 - q/2) for q = 1.mant23 * 2^(octave - 32), by the piecewise polynomial:
    s = t - m (exact), then Horner's rule with one fma per step."""
    coeffs = _coefficients(octave.device)
    row = octave * 2 + (mant23 >> 22)
    s = f32_from_bits(mant23 | 0x3F800000) - coeffs[normal_table.CENTER][row]
    r = coeffs[normal_table.DEGREE][row]
    for k in range(normal_table.DEGREE - 1, -1, -1):
        r = fma_f32(r, s, coeffs[k][row])
    return r


def standard_normal(words: torch.Tensor) -> torch.Tensor:
    k = ((words << 1) | 1) & M32
    octave = torch.frexp(k.to(torch.float64)).exponent.to(torch.int64) - 1  # floor(log2 k), exact
    mant23 = ((k << (31 - octave)) >> 8) & 0x7FFFFF
    r = half_normal_quantile(octave, mant23)
    return f32_from_bits(bits_from_f32(r) ^ (words & 0x80000000))


def uniform_closed_open(words: torch.Tensor) -> torch.Tensor:
    return (words >> 8).to(torch.float32) * _f32(2.0**-24, words)


def uniform_open(words: torch.Tensor) -> torch.Tensor:
    return (((words >> 9) << 1) | 1).to(torch.float32) * _f32(2.0**-24, words)


def half_normal_quantile_of(q: torch.Tensor) -> torch.Tensor:
    q = torch.where(q < _f32(2.0**-32, q), _f32(2.0**-32, q), q)
    q = torch.where(q > _f32(1.0 - 2.0**-24, q), _f32(1.0 - 2.0**-24, q), q)
    b = bits_from_f32(q)
    return half_normal_quantile((b >> 23) - 95, b & 0x7FFFFF)


def values_from_words(words: torch.Tensor, kind: int, params) -> torch.Tensor:
    """float32 values (before rounding to the destination dtype) of the given words."""
    p = [_f32(float(x), words) for x in params]
    if kind == NORMAL:
        return fma_f32(p[1], standard_normal(words), p[0])
    if kind == UNIFORM:
        return fma_f32(p[1] - p[0], uniform_closed_open(words), p[0])
    if kind == TRUNC_NORMAL:
        mean, std, a, b, p_lo, p_hi = p
        prob = fma_f32(p_hi - p_lo, uniform_open(words), p_lo)
        lower = prob < _f32(0.5, words)
        tail = torch.where(lower, prob, _f32(1.0, words) - prob)
        z = half_normal_quantile_of(tail + tail)
        z = torch.where(lower, -z, z)
        v = fma_f32(std, z, mean)
        v = torch.where(v < a, a, v)
        return torch.where(v > b, b, v)
    if kind == CONSTANT:
        return p[0].expand(words.shape).clone()
    raise ValueError(f"unknown distribution code {kind}")


def _next_down(bits: torch.Tensor, sign_bit: int) -> torch.Tensor:
    magnitude = bits & (sign_bit - 1)
    stepped = torch.where((bits & sign_bit) != 0, bits + 1, bits - 1)
    return torch.where(magnitude == 0, torch.full_like(bits, sign_bit | 1), stepped)


def round_to(values: torch.Tensor, dtype: torch.dtype, kind: int, params) -> torch.Tensor:
    """Round float32 values to `dtype` (nearest even); uniform's bound b stays excluded."""
    finish = kind == UNIFORM and _f32(params[0], values) < _f32(params[1], values)
    b = _f32(params[1], values) if finish else None
    if dtype in (torch.float32, torch.float64):
        if finish:
            bits = bits_from_f32(values)
            values = torch.where(values >= b, f32_from_bits(_next_down(bits, 0x80000000)), values)
        return values.to(dtype)
    out = values.to(dtype)
    if finish:
        bits = out.view(torch.int16).to(torch.int64) & 0xFFFF
        down = _next_down(bits, 0x8000)
        down = torch.where(down >= 2**15, down - 2**16, down).to(torch.int16).view(dtype)
        out = torch.where(out.to(torch.float32) >= b, down, out)
    return out


def placed_index(placement, i: torch.Tensor) -> torch.Tensor:
    """Logical indices of elements i of a tensor placed by (offset, run, run_stride) in a larger
    logical tensor: runs of `run` consecutive indices, `run_stride` apart (run 0: offset + i)."""
    offset, run, run_stride = placement
    if run == 0:
        return i + offset
    return offset + torch.div(i, run, rounding_mode="floor") * run_stride + i % run


def values_at(indices: torch.Tensor, *, kind: int, params, seed: int, stream: int,
              dtype: torch.dtype) -> torch.Tensor:
    """Contract values at the given logical indices (int64 tensor), in `dtype`."""
    words = stream_words(indices, seed, stream)
    return round_to(values_from_words(words, kind, params), dtype, kind, params)


def init_(tensor: torch.Tensor, *, kind: int, params, seed: int, stream: int,
          padding_row: int = -1, placement=(0, 0, 0), chunk: int = 1 << 20) -> torch.Tensor:
    """Fill `tensor` in place with the contract's values (any strides, any device); element i
    (row-major) gets the value of logical index placed_index(placement, i)."""
    n = tensor.numel()
    if n == 0:
        return tensor
    flat = torch.empty(n, dtype=tensor.dtype, device=tensor.device)
    for start in range(0, n, chunk):
        idx = placed_index(placement, torch.arange(start, min(n, start + chunk),
                                                   dtype=torch.int64, device=tensor.device))
        flat[start:start + chunk] = values_at(idx, kind=kind, params=params, seed=seed,
                                              stream=stream, dtype=tensor.dtype)
    if padding_row >= 0:
        row = n // tensor.shape[0]
        flat[padding_row * row:(padding_row + 1) * row] = 0
    tensor.copy_(flat.view(tensor.shape))
    return tensor
