"""Words -> values at the extremes: every transform stays finite, inside its range, and the
kernel equals the reference there; the quantile table's accuracy matches what docs/rng.md says."""
import functools
import math

import numpy as np
import pytest
import torch
from scipy.special import ndtri

import fusedinit
import fusedinit.testing
from fusedinit.ops import normal_table, reference
from fusedinit.ops.kinds import NORMAL, TRUNC_NORMAL, UNIFORM
from fusedinit.ops.specs import TruncNormal
from conftest import assert_bitwise_equal, isas

EXTREME_WORDS = sorted({0, 1, 2, 3, 0xFF, 0x100, 0x1FF, 0x200, 0x7FFFFF, 0x800000, 0xFFFFFF,
                        2**31 - 2, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 2, 2**32 - 1,
                        *[1 << k for k in range(32)], *[(1 << k) - 1 for k in range(1, 33)],
                        *[(1 << 31) | (1 << k) for k in range(31)]})
CASES = [
    (NORMAL, [0.0, 1.0, 0, 0, 0, 0]),
    (NORMAL, [-3.0, 1e-3, 0, 0, 0, 0]),
    (UNIFORM, [0.0, 1.0, 0, 0, 0, 0]),
    (UNIFORM, [-2.5, 7.0, 0, 0, 0, 0]),
    (TRUNC_NORMAL, TruncNormal(0.0, 1.0, -2.0, 2.0).params()),
    (TRUNC_NORMAL, TruncNormal(0.0, 0.02, -2.0, 2.0).params()),
    (TRUNC_NORMAL, TruncNormal(1.0, 1.0, 3.0, 9.0).params()),
    (TRUNC_NORMAL, TruncNormal(0.0, 1.0, -6.0, -4.0).params()),
]


@pytest.mark.parametrize("kind,params", CASES)
def test_extreme_words_all_variants(kind, params, cpu_isa):
    words = torch.tensor(EXTREME_WORDS, dtype=torch.int64)
    expected = reference.values_from_words(words, kind, params)
    assert torch.isfinite(expected).all()
    for isa in isas():
        cpu_isa(isa)
        got = fusedinit.testing.transform_words(words, kind, params)
        assert_bitwise_equal(got, expected, isa)


def test_uniform_range_at_extremes():
    words = torch.tensor(EXTREME_WORDS, dtype=torch.int64)
    u = reference.uniform_closed_open(words)
    assert u.min() == 0.0 and u.max() == 1.0 - 2.0**-24
    o = reference.uniform_open(words)
    assert o.min() == 2.0**-24 and o.max() == 1.0 - 2.0**-24


def test_normal_tails_reach_beyond_six():
    words = torch.tensor([0, 2**31, 2**32 - 1, 2**31 - 1], dtype=torch.int64)
    z = fusedinit.testing.transform_words(words, NORMAL, [0.0, 1.0, 0, 0, 0, 0])
    # word 0: q = 2^-32 (the rarest); word 2^31 - 1: q just below 1 (z close to 0).
    assert z[0] == -z[1] and z[0] > 6.2
    assert abs(z[3]) < 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b", [1.0, 2.0, -1.0, 0.1, 3.0])
def test_uniform_upper_bound_excluded_after_rounding(dtype, b):
    a = b - 1.0 if b != 0.1 else 0.0
    t = fusedinit.uniform_(torch.empty(1 << 18, dtype=dtype), a, b, seed=4)
    assert (t.float() < b).all() and (t.float() >= a - abs(a) * 2**-7).all()
    t32 = fusedinit.uniform_(torch.empty(1 << 18), a, b, seed=4)
    assert (t32 < torch.tensor(b, dtype=torch.float32)).all()


def test_float16_subnormal_and_overflow_rounding():
    """Values crossing float16's subnormal range and its overflow threshold round as torch does."""
    for spec in (fusedinit.Normal(0.0, 1e-6), fusedinit.Normal(65504.0, 30.0),
                 fusedinit.Normal(-65504.0, 30.0), fusedinit.Uniform(-7e-8, 7e-8)):
        # The raw op: the API refuses specs whose values overflow float16 (they would be inf).
        t, tb = torch.empty(1 << 16, dtype=torch.float16), torch.empty(1 << 16, dtype=torch.bfloat16)
        fusedinit.ops.op.init_([t, tb], [spec.kind] * 2, list(spec.op_params) * 2, [0, 0], [-1, -1], 8)
        values = fusedinit.init_many_([(torch.empty(1 << 16), spec)], seed=8)[0]
        assert_bitwise_equal(t, values.to(torch.float16), str(spec))
        assert_bitwise_equal(tb, values.to(torch.bfloat16), str(spec))


def test_float64_is_widened_float32():
    for spec in (fusedinit.Normal(0.3, 2.0), fusedinit.TruncNormal(0, 1, -1, 1)):
        t64 = fusedinit.init_many_([(torch.empty(4096, dtype=torch.float64), spec)], seed=3)[0]
        t32 = fusedinit.init_many_([(torch.empty(4096), spec)], seed=3)[0]
        assert_bitwise_equal(t64, t32.double())


def test_quantile_table_accuracy():
    """Dense sample of every table row against scipy's exact quantile (docs: max error): within
    2e-7 where |z| < 4, and there float32's own spacing (half an ulp is 2.4e-7 for |z| >= 4)
    plus a small remainder."""
    worst = worst_below4 = 0.0
    for octave in range(32):
        step = 1 << max(0, 23 - octave) if octave <= 20 else 97
        mant = torch.arange(0, 1 << 23, step, dtype=torch.int64)
        z = reference.half_normal_quantile(torch.full_like(mant, octave), mant).double().numpy()
        t = 1.0 + mant.numpy() / 2.0**23
        exact = -ndtri(t * 2.0 ** (octave - 32) / 2.0)
        err = np.abs(z - exact)
        worst = max(worst, float(err.max()))
        if (exact < 4).any():
            worst_below4 = max(worst_below4, float(err[exact < 4].max()))
    assert worst <= normal_table.MAX_ABS_ERROR
    assert worst_below4 <= normal_table.MAX_ABS_ERROR_BELOW_4 <= 2e-7
    assert worst < 2.6e-7


def test_truncated_normal_bounds_are_respected():
    for spec in (TruncNormal(0.0, 1.0, -0.5, 0.25), TruncNormal(5.0, 1.0, -1.0, 1.0),
                 TruncNormal(0.0, 0.02, -2.0, 2.0), TruncNormal(0.0, 0.0, -1.0, 1.0)):
        t = fusedinit.init_many_([(torch.empty(1 << 18), spec)], seed=2)[0]
        assert torch.isfinite(t).all() and t.min() >= spec.a and t.max() <= spec.b, spec


def test_table_mirror_matches_header():
    """The Python mirror of the table equals the header the kernels compile."""
    import pathlib
    import re
    header = pathlib.Path(__file__).resolve().parents[1] / "csrc/fusedinit/normal_table.h"
    if not header.exists():
        pytest.skip("source tree not available")
    floats = [float.fromhex(x) for x in re.findall(r"(-?0x[0-9a-f.]+p[-+]\d+)f", header.read_text())]
    mirror = [float(v) for row in normal_table.COEFFS
              for v in reference.f32_from_bits(torch.tensor(row, dtype=torch.int64)).tolist()]
    assert floats == mirror and not any(math.isnan(f) for f in floats)



def _below(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The largest value of `dtype` below the float32 b (b != 0), from its bits."""
    nearest = b.to(dtype)
    if nearest.float() < b:
        return nearest
    bits = nearest.view(torch.int16)
    return (bits - 1 if b > 0 else bits + 1).view(dtype)


@functools.lru_cache(maxsize=None)
def _stream_words(n: int, seed: int, stream: int) -> torch.Tensor:
    return reference.stream_words(torch.arange(n), seed, stream)


UNIFORM_NEAR_B = [(0.0, 1.0), (-0.2, 0.3), (-3.0, -1.25), (2.5, 6.0)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("a, b", UNIFORM_NEAR_B)
def test_uniform_16bit_words_that_round_up_to_b(dtype, a, b):
    """Words whose float32 value rounds to b or above in 16 bits (found among 2^16 indices;
    0.3 is no 16-bit value, the others are): every backend writes the largest value below b
    there - the reference (its rounding, and its backend on blocks around the first few), each
    CPU kernel variant and the emulated CUDA kernel - and equals the reference elsewhere."""
    from fusedinit.testing import emulate_cuda_

    n, seed, stream = 1 << 16, 21, 3
    spec = fusedinit.Uniform(a, b, stream=stream)
    b32 = torch.tensor(b, dtype=torch.float32)
    float32 = reference.values_from_words(_stream_words(n, seed, stream), UNIFORM, spec.op_params)
    up = float32.to(dtype).float() >= b32
    assert float32.max() < b32 and int(up.sum()) >= 4, "the case must reach the guard"
    expected = reference.round_to(float32, dtype, UNIFORM, spec.op_params)
    assert (expected[up] == _below(b32, dtype)).all() and (expected.float() < b32).all()
    assert_bitwise_equal(expected[~up], float32[~up].to(dtype), "reference off the guard")
    for i in up.nonzero().flatten()[:4].tolist():
        start = i - i % 256
        block = fusedinit.uniform_(torch.empty(256, dtype=dtype), a, b, seed=seed, stream=stream,
                                   backend="reference", global_shape=(n,), global_offset=(start,))
        assert_bitwise_equal(block, expected[start:start + 256], f"reference backend at {i}")
    for isa in isas():
        fusedinit.testing.set_cpu_isa(isa)
        try:
            got = fusedinit.uniform_(torch.empty(n, dtype=dtype), a, b, seed=seed, stream=stream)
        finally:
            fusedinit.testing.set_cpu_isa("auto")
        assert_bitwise_equal(got, expected, f"cpu {isa}")
    emulated = emulate_cuda_([(torch.empty(n, dtype=dtype), spec)], seed=seed)[0]
    assert_bitwise_equal(emulated, expected, "emulated cuda")
