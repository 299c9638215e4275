"""The exact float32 fma of the reference (and of tools/gen_normal_table.py, which fits the
table with it) against exact rational arithmetic: random values over the whole float32 range
and adversarial ones - ties, cancellation, subnormal results and operands, overflow."""
import importlib.util
import pathlib
from fractions import Fraction

import numpy as np
import pytest
import torch

from fusedinit.reference import fma_f32

ROOT = pathlib.Path(__file__).resolve().parents[1]
F32_MAX_EXP = 128  # values >= 2^128 - 2^103 (FLT_MAX + half an ulp) round to infinity


def exact_f32(x: Fraction, zero_negative: bool) -> np.float32:
    """x rounded to float32, nearest even, with IEEE overflow and the sign of an exact zero."""
    if x == 0:
        return np.float32(-0.0 if zero_negative else 0.0)
    sign, x = (-1 if x < 0 else 1), abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if x < Fraction(2) ** e:
        e -= 1
    quantum = Fraction(2) ** (max(e, -126) - 23)  # below 2^-126: the subnormal spacing
    n, rest = divmod(x, quantum)
    if rest > quantum / 2 or (rest == quantum / 2 and n % 2 == 1):
        n += 1
    value = n * quantum
    if value >= Fraction(2) ** F32_MAX_EXP:
        return np.float32(sign * np.inf)
    return np.float32(sign * float(value))  # exact: value has <= 24 significant bits


def exact_fma(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    # An exact zero sum is +0 in round-to-nearest unless both addends are -0.
    product_negative = (np.signbit(a) != np.signbit(b))
    return exact_f32(exact, zero_negative=bool(product_negative and np.signbit(c)))


def _numpy_fma():
    spec = importlib.util.spec_from_file_location("gen_normal_table",
                                                  ROOT / "tools/gen_normal_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda a, b, c: module.fma32(a, b, c)


def _torch_fma(a, b, c):
    return fma_f32(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)).numpy()


IMPLEMENTATIONS = {"reference": _torch_fma}
if (ROOT / "tools/gen_normal_table.py").exists():
    IMPLEMENTATIONS["gen_normal_table"] = _numpy_fma()


def f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def cases() -> dict:
    rng = np.random.default_rng(7)
    n = 3000
    out = {}
    finite = lambda x: x[np.isfinite(x)]  # noqa: E731
    out["random bits"] = [f32(rng.integers(0, 2**32, 3 * n, dtype=np.uint64)) for _ in range(3)]
    out["random bits"] = [finite(x)[:n] for x in out["random bits"]]
    out["normal"] = [rng.standard_normal(n).astype(np.float32) * np.float32(s)
                     for s in (1.0, 3.0, 0.5)]
    # Ties: short significands make a*b exact in float32; c is half its ulp, so a*b + c lies
    # exactly between two floats (both signs, both parities).
    a = ((rng.integers(1 << 11, 1 << 12, n) * 2.0**-11) * rng.choice([-1, 1], n)).astype(np.float32)
    b = (rng.integers(1 << 11, 1 << 12, n) * 2.0 ** rng.integers(-20, 20, n)).astype(np.float32)
    p = a.astype(np.float64) * b
    half_ulp = np.ldexp(1.0, np.frexp(p)[1] - 25)
    c = (half_ulp * rng.choice([-1, 1], n)).astype(np.float32)
    out["ties"] = [a, b, c]
    # Cancellation: c = -fl(a*b), so the result is the product's own rounding error.
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    out["cancellation"] = [a, b, -(a * b)]
    out["exact zero"] = [a, b, -(a.astype(np.float64) * b).astype(np.float32) * 0
                         + np.where(rng.random(n) < 0.5, np.float32(-0.0), np.float32(0.0))]
    # Subnormal operands and results.
    tiny = f32(rng.integers(1, 1 << 23, n))  # subnormal bit patterns
    out["subnormal"] = [tiny, rng.standard_normal(n).astype(np.float32),
                        f32(rng.integers(1, 1 << 24, n)) * rng.choice([-1, 1], n).astype(np.float32)]
    out["subnormal products"] = [
        (rng.standard_normal(n) * 2.0**-70).astype(np.float32),
        (rng.standard_normal(n) * 2.0**-70).astype(np.float32),
        (rng.standard_normal(n) * 2.0**-135).astype(np.float32)]
    # Overflow: products around FLT_MAX, c pushing across the threshold or pulling back.
    a = (rng.uniform(1.0, 2.0, n) * 2.0**64).astype(np.float32)
    b = (rng.uniform(1.0, 2.0, n) * 2.0**63).astype(np.float32)
    c = (rng.choice([-1, 1], n) * rng.uniform(0, 1, n) * 2.0**127).astype(np.float32)
    out["overflow"] = [a, b, c]
    fmax = np.float32(np.finfo(np.float32).max)
    half = np.float32(2.0**103)  # FLT_MAX + half an ulp: the overflow tie
    out["overflow tie"] = [np.array([fmax, fmax, fmax, -fmax], np.float32),
                           np.array([1, 1, 1, 1], np.float32),
                           np.array([half, np.nextafter(half, np.float32(0)), -half, -half],
                                    np.float32)]
    return out


CASES = cases()


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_fma_is_correctly_rounded(impl, case):
    a, b, c = (np.ascontiguousarray(x, dtype=np.float32) for x in CASES[case])
    with np.errstate(all="ignore"):
        got = IMPLEMENTATIONS[impl](a, b, c)
    want = np.array([exact_fma(x, y, z) for x, y, z in zip(a, b, c)], dtype=np.float32)
    bad = np.nonzero(got.view(np.uint32) != want.view(np.uint32))[0]
    assert bad.size == 0, [(a[i], b[i], c[i], got[i], want[i]) for i in bad[:5]]


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
def test_double_rounding_is_avoided(impl):
    """(1 + 2^-12)^2 + 2^-80 is just above the midpoint 1 + 2^-11 + 2^-24: it rounds up. Both
    the float32 mul-then-add (Triton's interpreter for tl.fma) and the float64 sum rounded
    again to float32 land on the midpoint and round down, to even."""
    a = np.array([1 + 2.0**-12, -(1 + 2.0**-12)], np.float32)
    b = np.array([1 + 2.0**-12, 1 + 2.0**-12], np.float32)
    c = np.array([2.0**-80, -(2.0**-80)], np.float32)
    want = np.array([1 + 2.0**-11 + 2.0**-23, -(1 + 2.0**-11 + 2.0**-23)], np.float32)
    assert [exact_fma(x, y, z) for x, y, z in zip(a, b, c)] == list(want)
    assert not np.array_equal(a * b + c, want)
    assert not np.array_equal((a.astype(np.float64) * b + c).astype(np.float32), want)
    assert np.array_equal(IMPLEMENTATIONS[impl](a, b, c).view(np.uint32), want.view(np.uint32))
