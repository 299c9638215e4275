"""The AVX-512 kernels on SIMDe (tests/simde_variant.py): the variant is there (every test that
loops over conftest.isas() then checks it against the reference), and the intrinsics it rests
on compute what the AVX-512 instructions compute - SIMDe's _mm512_fmadd_ps is fused, and our
exact versions of the ones SIMDe lacks agree with the instructions' definitions."""
import ctypes

import numpy as np
import pytest
import torch

import fusedinit
import fusedinit._C
import fusedinit.testing
import simde_variant
from conftest import assert_bitwise_equal, isas


@pytest.fixture(scope="module")
def lib():
    reason = simde_variant.unavailable_reason()
    if reason is not None and not simde_variant.required():
        pytest.skip(reason)
    return simde_variant.library()  # in CI, raises with the reason instead


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def test_the_avx512_kernels_run_here(lib, cpu_isa):
    assert simde_variant.NAME in isas()
    assert cpu_isa(simde_variant.NAME) == simde_variant.NAME
    assert fusedinit.testing.cpu_isa() == simde_variant.NAME
    words = torch.arange(0, 2**32, 2**32 // 4099, dtype=torch.int64)
    from fusedinit import reference
    from fusedinit.ops.kinds import NORMAL
    params = [0.5, 2.0, 0, 0, 0, 0]
    assert_bitwise_equal(fusedinit.testing.transform_words(words, NORMAL, params),
                         reference.values_from_words(words, NORMAL, params), simde_variant.NAME)


def test_fmadd_is_fused(lib):
    """One rounding, not two: a*b+c where the product alone would round (contract: fma_rn)."""
    rng = np.random.default_rng(1)
    n = 1 << 14
    a = (1 + rng.integers(0, 2**23, n) / 2**23).astype(np.float32)
    b = (1 + rng.integers(0, 2**23, n) / 2**23).astype(np.float32)
    c = -(1 + rng.integers(0, 2**24, n) / 2**23).astype(np.float32)
    a[:2] = b[:2] = 1 + 2**-12  # a*b = 1 + 2^-11 + 2^-24: a tie the product alone rounds away
    c[:2] = -(1 + 2**-11)
    # a*b (48 bits, exact in float64) + c (a multiple of 2^-23 below 4) is exact in float64:
    # rounding it once to float32 is the correctly rounded fma.
    exact = (a.astype(np.float64) * b + c).astype(np.float32)
    out = np.empty(n, dtype=np.float32)
    lib.fusedinit_simde_fmadd_ps(_ptr(a), _ptr(b), _ptr(c), ctypes.c_int64(n), _ptr(out))
    assert out[0] == 2.0**-24
    np.testing.assert_array_equal(out.view(np.uint32), exact.view(np.uint32))
    unfused = a * b + c  # float32 multiply, then add: differs in many lanes, so this test can fail
    assert (unfused != exact).mean() > 0.2
    assert lib.fusedinit_simde_fma_path() in (b"2 x _mm256_fmadd_ps (x86 FMA, vfmadd)",
                                              b"4 x _mm_fmadd_ps (NEON vfmaq_f32)")


def test_lzcnt_shim(lib):
    edges = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000}
    for k in range(32):
        edges |= {1 << k, (1 << k) - 1, ((1 << k) + 1) & 0xFFFFFFFF, 0x80000000 | (1 << k)}
    words = np.array(sorted(edges) + list(np.random.default_rng(2).integers(0, 2**32, 4096)),
                     dtype=np.uint32)
    words = np.concatenate([words, np.zeros(-len(words) % 16, dtype=np.uint32)])
    out = np.empty_like(words)
    lib.fusedinit_simde_lzcnt_epi32(_ptr(words), ctypes.c_int64(len(words)), _ptr(out))
    expected = [32 - int(w).bit_length() for w in words]
    assert out.tolist() == expected


def _cvtps_ph_inputs() -> np.ndarray:
    """Every finite half, the midpoints between neighbours (ties), a few float32 ulps around
    both, then float32 subnormals, the overflow threshold, infinities, signalling and quiet NaNs
    with payloads that truncation keeps or loses, and random bit patterns; both signs."""
    halves = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    upper = np.append(halves[1:], np.float32(65520.0))  # 65520: the tie between 65504 and inf
    mids = ((halves.astype(np.float64) + upper) / 2).astype(np.float32)
    near = [halves, mids]
    bits = np.concatenate([halves.view(np.uint32), mids.view(np.uint32)]).astype(np.int64)
    for step in (-2, -1, 1, 2):
        near.append(np.clip(bits + step, 0, 0x7F7FFFFF).astype(np.uint32).view(np.float32))
    specials = np.array([0, 1, 2, 0x7FFFFF, 0x400000, 0x00800000, 0x33000000, 0x33000001,
                         0x32FFFFFF, 0x33800000, 0x387FE000, 0x387FF000, 0x38800000,
                         0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,
                         0x7F7FFFFF, 0x7F800000, 0x7F800001, 0x7F801FFF, 0x7F802000,
                         0x7FA00000, 0x7FBFFFFF, 0x7FC00000, 0x7FC00001, 0x7FFFFFFF],
                        dtype=np.uint32).view(np.float32)
    rand = np.random.default_rng(3).integers(0, 2**32, 1 << 18, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate(near + [specials, rand.view(np.float32)])
    values = np.concatenate([values, -values])
    return np.concatenate([values, np.zeros(-len(values) % 16, dtype=np.float32)])


def test_cvtps_ph_shim(lib):
    """Round to nearest even as vcvtps2ph with imm8 = _MM_FROUND_TO_NEAREST_INT: against the
    hardware instruction (F16C) where this build has it, and torch's float -> half."""
    x = _cvtps_ph_inputs()
    out = np.empty(len(x), dtype=np.uint16)
    lib.fusedinit_simde_cvtps_ph(_ptr(x), ctypes.c_int64(len(x)), _ptr(out))
    native = np.empty_like(out)
    if lib.fusedinit_native_cvtps_ph(_ptr(x), ctypes.c_int64(len(x)), _ptr(native)):
        mismatch = np.flatnonzero(out != native)
        assert mismatch.size == 0, (f"{mismatch.size} differ from vcvtps2ph, first "
                                    f"{x.view(np.uint32)[mismatch[0]]:#010x}")
    nan = np.isnan(x)
    torch_half = torch.from_numpy(x[~nan]).to(torch.float16).view(torch.int16).numpy()
    np.testing.assert_array_equal(out[~nan], torch_half.view(np.uint16))
    # A NaN stays a NaN of its sign (the exact payload rule is the instruction's, checked above).
    assert (out[nan] & 0x7C00 == 0x7C00).all() and (out[nan] & 0x3FF != 0).all()
    assert ((out[nan] >> 15) == (x[nan].view(np.uint32) >> 31)).all()


class _Kernels(ctypes.Structure):  # csrc/cpu/block_kernels.h: BlockKernels
    _fields_ = [("name", ctypes.c_char_p), ("fill", ctypes.c_void_p),
                ("values", ctypes.c_void_p), ("transform", ctypes.c_void_p)]


def test_added_variants_never_replace_built_in_ones(lib):
    add = ctypes.CDLL(fusedinit._C.__file__).fusedinit_add_cpu_variant
    add.argtypes, add.restype = [ctypes.c_void_p], ctypes.c_int
    simde = _Kernels.from_address(lib.fusedinit_simde_avx512_kernels())
    for name in (b"auto", b"generic", b"avx2", b"avx512"):
        assert add(ctypes.addressof(_Kernels(name, simde.fill, simde.values, simde.transform))) == -1
    assert add(None) == -1
    assert add(ctypes.addressof(simde)) == 0  # already there: kept
