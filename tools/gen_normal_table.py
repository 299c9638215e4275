"""Generate the half-normal inverse-CDF table shared by every backend.

The contract (docs/rng.md) maps a two-sided tail probability q in (0, 1) to
z = Phi^-1(1 - q/2) with one degree-6 polynomial per (octave, half-octave):
q = t * 2**(j - 32), t in [1, 2), row r = 2j + (t >= 1.5), s = t - m_r and
z = c0 + s*(c1 + s*(... + s*c6)), every step one correctly rounded fma.

Each row's expansion point m_r lies within 2^-11 of its half-octave's centre
(1.25 or 1.75) on the 2^-23 grid, so s = t - m_r is exact, |s| <= 1/4, and it
is chosen where the exact quantile is within ~1e-4 ulp of a float32: c0 is then
(almost) exact, and the evaluation's error is the final rounding plus a small
remainder. The other coefficients are fitted on Chebyshev nodes and rounded to
float32 one at a time from the highest, refitting the lower ones each time.

Running this script rewrites csrc/fusedinit/normal_table.h and
python/fusedinit/ops/normal_table.py; the stream changes with them, so the test
vectors must be regenerated too (tools/gen_vectors.py). The maximum error is
measured exhaustively: every one of the 2^28 (octave, mant23) arguments the
quantile accepts, evaluated with exact float32 fma, against scipy's float64
ndtri.

    python tools/gen_normal_table.py [--sample N]   (N > 1: every N-th argument, faster)
"""
import argparse
import pathlib

import numpy as np
from scipy.special import ndtri

OCTAVES, SEGMENTS, DEGREE = 32, 2, 6
COLUMNS = DEGREE + 2       # c0..c6 and the expansion point m
CENTER = DEGREE + 1        # column of m
CANDIDATES = 1 << 12       # expansion points tried per row
ROOT = pathlib.Path(__file__).resolve().parents[1]
F32, F64 = np.float32, np.float64


def fma32(a, b, c):
    """Correctly rounded float32 fma: the float64 product of two float32 is exact, the sum
    is rounded to odd in float64 (53 >= 24 + 2 bits) and then to nearest float32."""
    p = a.astype(F64) * b.astype(F64)
    c64 = c.astype(F64)
    s = p + c64
    bb = s - p
    e = (p - (s - bb)) + (c64 - bb)  # p + c == s + e exactly (TwoSum)
    bits = s.view(np.int64)
    inexact_even = (e != 0) & ((bits & 1) == 0) & np.isfinite(s)
    step = np.where((e > 0) == (s > 0), 1, -1)
    return np.where(inexact_even, bits + step, bits).view(F64).astype(F32)


def quantile(t, j):
    """Exact (float64) half-normal quantile at q = t * 2^(j - 32)."""
    return -ndtri(t * 2.0 ** (j - 32) / 2.0)


def fit(j, seg):
    """Coefficients c0..c6 and the expansion point of row 2j + seg, as float32."""
    base = 1.25 + 0.5 * seg
    m = base + np.arange(CANDIDATES) * 2.0**-23
    z = quantile(m, j)
    miss = np.abs(z - z.astype(F32)) / np.spacing(z.astype(F32)).astype(F64)
    m = base + int(np.argmin(miss)) * 2.0**-23
    c0 = F64(F32(quantile(np.array([m]), j)[0]))
    n = 600
    lo, hi = 1.0 + 0.5 * seg - m, 1.5 + 0.5 * seg - m
    s = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    y = quantile(s + m, j) - c0
    fixed = {0: c0}
    for top in range(DEGREE, 0, -1):
        free = [k for k in range(1, DEGREE + 1) if k not in fixed]
        rhs = y - sum(fixed[k] * s**k for k in fixed if k)
        sol = np.linalg.lstsq(np.stack([s**k for k in free], 1), rhs, rcond=None)[0]
        fixed[top] = F64(F32(sol[free.index(top)]))
    return [F32(fixed[k]) for k in range(DEGREE + 1)] + [F32(m)]


def evaluate(row, mant23):
    """The contract's float32 evaluation of one row at the given mantissas."""
    t = (mant23.astype(np.uint32) | np.uint32(0x3F800000)).view(F32)
    s = (t - row[CENTER]).astype(F32)  # exact
    r = np.full(s.shape, row[DEGREE], F32)
    for k in range(DEGREE - 1, -1, -1):
        r = fma32(r, s, np.full(s.shape, row[k], F32))
    return r


def max_error(table, sample):
    """Max |error| against the exact quantile, overall and where |z| < 4, by octave."""
    worst = worst_below4 = 0.0
    for j in range(OCTAVES):
        for seg in range(SEGMENTS):
            for start in range(seg << 22, (seg + 1) << 22, 1 << 20):
                mant = np.arange(start, start + (1 << 20), sample, dtype=np.int64)
                got = evaluate(table[j * SEGMENTS + seg], mant).astype(F64)
                want = quantile(1.0 + mant / 2.0**23, j)
                err = np.abs(got - want)
                worst = max(worst, float(err.max()))
                small = np.abs(want) < 4.0
                if small.any():
                    worst_below4 = max(worst_below4, float(err[small].max()))
    return worst, worst_below4


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=int, default=1, help="evaluate every N-th argument")
    args = parser.parse_args()
    table = [fit(j, seg) for j in range(OCTAVES) for seg in range(SEGMENTS)]
    err, err4 = max_error(table, args.sample)
    rows = OCTAVES * SEGMENTS
    cols = []
    for k in range(COLUMNS):
        cols.append("    {" + ", ".join(f"{float(table[r][k]).hex()}f" for r in range(rows)) + "}")
    measured = "all 2^28 arguments" if args.sample == 1 else f"every {args.sample}th argument"
    header = f"""// Generated by tools/gen_normal_table.py - do not edit by hand.
// Half-normal quantile z(q) = Phi^-1(1 - q/2) for q = t * 2^(j-32), t in [1, 2):
// row r = 2*j + (t >= 1.5) holds c_0..c_{DEGREE} of z ~ sum_k c_k * s^k, s = t - m_r, and its
// expansion point m_r (column {CENTER}), stored as kNormalTable[column][r] so a SIMD lookup reads
// one contiguous row per column. Max |error| against the exact quantile, evaluated in float32
// with fma as the contract prescribes ({measured}): {err:.3e}; {err4:.3e} where |z| < 4.
#pragma once

namespace fusedinit {{

constexpr int kNormalTableRows = {rows};
constexpr int kNormalTableDegree = {DEGREE};
constexpr int kNormalTableCenter = {CENTER};   // column of the expansion point m_r
constexpr int kNormalTableColumns = {COLUMNS};

// The data once, as a macro, so the host table and nvcc's __constant__ copy are one source.
#define FI_NORMAL_TABLE_DATA {{ \\
""" + ", \\\n".join(cols) + """ \\
}

FI_TABLE_STORAGE float kNormalTable[kNormalTableColumns][kNormalTableRows] = FI_NORMAL_TABLE_DATA;
#if defined(__CUDACC__)
__constant__ float kNormalTableDevice[kNormalTableColumns][kNormalTableRows] = FI_NORMAL_TABLE_DATA;
#endif

}  // namespace fusedinit
"""
    (ROOT / "csrc/fusedinit/normal_table.h").write_text(header)
    py = ['"""Generated by tools/gen_normal_table.py - do not edit by hand (mirrors csrc/fusedinit/normal_table.h)."""',
          "", f"MAX_ABS_ERROR = {err!r}", f"MAX_ABS_ERROR_BELOW_4 = {err4!r}  # where |z| < 4",
          f"DEGREE = {DEGREE}", f"CENTER = {CENTER}", "",
          "# COEFFS[k][r]: column k of row r = 2*octave + (t >= 1.5) as float32 bit patterns:",
          f"# c_k for k <= {DEGREE}, the expansion point m_r for k = {CENTER}.",
          "COEFFS = ["]
    for k in range(COLUMNS):
        bits = np.array([table[r][k] for r in range(rows)], dtype=F32).view(np.uint32)
        py.append("    [" + ", ".join(f"0x{int(b):08x}" for b in bits) + "],")
    py.append("]")
    (ROOT / "python/fusedinit/ops/normal_table.py").write_text("\n".join(py) + "\n")
    print(f"max abs error {err:.3e} ({measured}); {err4:.3e} where |z| < 4")


if __name__ == "__main__":
    main()
