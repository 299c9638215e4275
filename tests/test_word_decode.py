"""The GPU kernels read a normal word's table row and argument off one conversion: k = 2b + 1
rounded toward zero to float32 (CUDA __uint2float_rz, Triton libdevice uint2float_rz). Its
bits f are (127 + octave) << 23 | mant23, so row = (f >> 22) - 254 and t = f's significand.
Checked here for every octave and mantissa edge against the integer definition (rng_math.h
normal_word + quantile_row), without a GPU: float64 holds k exactly and truncating its
significand to 24 bits is the rounding toward zero."""
import numpy as np


def float32_rz_bits(k: np.ndarray) -> np.ndarray:
    wide = k.astype(np.float64).view(np.uint64) & ~np.uint64((1 << 29) - 1)
    return wide.view(np.float64).astype(np.float32).view(np.uint32).astype(np.int64)


def contract_row_and_mant23(k: np.ndarray):
    k = k.astype(np.int64)
    octave = np.array([int(x).bit_length() - 1 for x in k], dtype=np.int64)
    mant23 = ((k << (31 - octave)) >> 8) & 0x7FFFFF
    return octave * 2 + (mant23 >> 22), mant23


def test_rz_conversion_gives_row_and_t():
    rng = np.random.default_rng(5)
    edges = [1, 3, (1 << 24) - 1, (1 << 24) + 1, (1 << 25) - 1, (1 << 32) - 1, (1 << 31) + 1,
             0xFFFFFF01, 0x80000001, 0xC0000001, 0xBFFFFFFF]
    for octave in range(32):  # both halves of every octave, its ends and random middles
        lo, hi = 1 << octave, (1 << (octave + 1)) - 1
        edges += [lo, hi, lo + (lo >> 1), lo + (lo >> 1) - 1]
        edges += list(rng.integers(lo, hi + 1, size=200))
    k = np.array(edges, dtype=np.int64) | 1  # k = 2b + 1 is odd
    f = float32_rz_bits(k)
    row, mant23 = contract_row_and_mant23(k)
    np.testing.assert_array_equal((f >> 22) - 254, row)
    np.testing.assert_array_equal(f & 0x7FFFFF, mant23)
    assert row.min() == 0 and row.max() == 63


def test_trunc_normal_argument_shift():
    """half_normal_quantile_of: q in [2^-32, 1 - 2^-24] has octave = exponent + 32, so the
    bits of q plus 32 << 23 (q * 2^32, exact) are f for its row and t."""
    q = np.concatenate([np.float32([2.0 ** -32, 0.5, 0.99999994, 2.0 ** -20 * 1.5]),
                        np.random.default_rng(6).uniform(2.0 ** -32, 1.0, 1000).astype(np.float32)])
    b = q.view(np.uint32).astype(np.int64)
    octave, mant23 = (b >> 23) - 95, b & 0x7FFFFF
    f = b + (32 << 23)
    np.testing.assert_array_equal((f >> 22) - 254, octave * 2 + (mant23 >> 22))
    np.testing.assert_array_equal(f & 0x7FFFFF, mant23)
