// AVX-512 block kernels: Philox on 8 counters per vector (one uint32 per 64-bit lane), the
// quantile table held in registers (permutes, not gathers), conversion and store in one pass.
// Same operations in the same order as rng_math.h, so the bits equal the portable kernels.
// FUSEDINIT_AVX512_SIMDE (tests only, never the package build): tests/simde/avx512_simde.cpp
// includes this file after SIMDe's portable _mm512_* intrinsics, so the same code runs and is
// checked against the reference on CPUs without AVX-512: no <immintrin.h>, no target pragma.
#if defined(FUSEDINIT_AVX512_SIMDE) || \
    (defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)))
#if !defined(FUSEDINIT_AVX512_SIMDE)
// Library headers come before the target pragma: an inline function of theirs compiled for a
// wider ISA here could otherwise be the copy the linker keeps for every caller.
#include <immintrin.h>
#endif

#include <cstdint>
#include <cstring>
#if !defined(FUSEDINIT_AVX512_SIMDE)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512cd,avx512bw,avx512dq,avx512vl,f16c,fma,bmi,bmi2,lzcnt,popcnt")
#endif

#include "block_kernels.h"

namespace fusedinit {
namespace cpu {
namespace avx512 {
namespace {

constexpr int64_t kBlock = 1024;  // elements per inner block, a multiple of 64

// Philox4x32-10 for kBatches x 8 consecutive groups starting at group g, each uint32 held in
// the low half of a 64-bit lane: one vpmuludq then yields lo (low half) and hi (after a shift);
// vpmuludq never reads the upper halves, so they need no masking. Independent batches are
// interleaved so the multiplier latency is hidden. Writes 32 * kBatches words in element order.
template <int kBatches>
inline void philox8(uint64_t g, __m512i c2_init, __m512i c3_init, const __m512i* k0,
                    const __m512i* k1, uint32_t* out) {
  const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  __m512i c0[kBatches], c1[kBatches], c2[kBatches], c3[kBatches];
  for (int b = 0; b < kBatches; ++b) {
    const __m512i group = _mm512_add_epi64(_mm512_set1_epi64(static_cast<int64_t>(g + 8 * b)), lane);
    c0[b] = group;
    c1[b] = _mm512_srli_epi64(group, 32);
    c2[b] = c2_init;
    c3[b] = c3_init;
  }
  const __m512i m0 = _mm512_set1_epi64(kPhiloxM0);
  const __m512i m1 = _mm512_set1_epi64(kPhiloxM1);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    for (int b = 0; b < kBatches; ++b) {
      const __m512i p0 = _mm512_mul_epu32(c0[b], m0);
      const __m512i p1 = _mm512_mul_epu32(c2[b], m1);
      c0[b] = _mm512_ternarylogic_epi64(_mm512_shuffle_epi32(p1, _MM_PERM_CDAB), c1[b], k0[r], 0x96);
      c2[b] = _mm512_ternarylogic_epi64(_mm512_shuffle_epi32(p0, _MM_PERM_CDAB), c3[b], k1[r], 0x96);
      c1[b] = p1;
      c3[b] = p0;
    }
  }
  const __m512i low32 = _mm512_set1_epi64(0xFFFFFFFF);
  for (int b = 0; b < kBatches; ++b) {
    // [c0 c1] and [c2 c3] per group, then groups in order across the 128-bit lanes.
    const __m512i c01 = _mm512_or_si512(_mm512_and_si512(c0[b], low32), _mm512_slli_epi64(c1[b], 32));
    const __m512i c23 = _mm512_or_si512(_mm512_and_si512(c2[b], low32), _mm512_slli_epi64(c3[b], 32));
    const __m512i lo = _mm512_unpacklo_epi64(c01, c23);  // groups 0, 2, 4, 6
    const __m512i hi = _mm512_unpackhi_epi64(c01, c23);  // groups 1, 3, 5, 7
    _mm512_storeu_si512(out + 32 * b,
                        _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi));
    _mm512_storeu_si512(out + 32 * b + 16,
                        _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), hi));
  }
}

// out[k] = word of element first + k, for k < n (n <= kBlock).
void words_block(uint64_t seed, uint64_t stream, uint64_t first, int64_t n, uint32_t* out) {
  __m512i k0[kPhiloxRounds], k1[kPhiloxRounds];
  uint32_t a = static_cast<uint32_t>(seed), b = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    k0[r] = _mm512_set1_epi64(a);
    k1[r] = _mm512_set1_epi64(b);
    a += kPhiloxW0;
    b += kPhiloxW1;
  }
  const __m512i c2 = _mm512_set1_epi64(static_cast<uint32_t>(stream));
  const __m512i c3 = _mm512_set1_epi64(static_cast<uint32_t>(stream >> 32));
  const uint64_t g0 = first >> 2;
  const int64_t skip = static_cast<int64_t>(first & 3);
  const int64_t groups = (skip + n + 3) >> 2;
  if (skip == 0 && (n & 63) == 0) {  // whole batches: straight into the output
    for (int64_t g = 0; g < groups; g += 16) philox8<2>(g0 + g, c2, c3, k0, k1, out + 4 * g);
    return;
  }
  alignas(64) uint32_t tmp[kBlock + 64];
  for (int64_t g = 0; g < groups; g += 8) philox8<1>(g0 + g, c2, c3, k0, k1, tmp + 4 * g);
  std::memcpy(out, tmp + skip, static_cast<size_t>(n) * sizeof(uint32_t));
}

struct Table {
  __m512 lo[kNormalTableColumns][2];  // rows 0..31: octaves 0..15 (rare: q < 2^-16)
  __m512 hi[kNormalTableColumns][2];  // rows 32..63
  Table() {
    for (int k = 0; k < kNormalTableColumns; ++k) {
      for (int h = 0; h < 2; ++h) {
        lo[k][h] = _mm512_loadu_ps(&kNormalTable[k][16 * h]);
        hi[k][h] = _mm512_loadu_ps(&kNormalTable[k][32 + 16 * h]);
      }
    }
  }
};

template <bool kLowRows>
inline __m512 horner(const Table& t, __m512i row, __mmask16 low_rows, __m512 tv) {
  auto column = [&](int k) {
    __m512 c = _mm512_permutex2var_ps(t.hi[k][0], row, t.hi[k][1]);
    if (kLowRows) {
      c = _mm512_mask_blend_ps(low_rows, c, _mm512_permutex2var_ps(t.lo[k][0], row, t.lo[k][1]));
    }
    return c;
  };
  const __m512 s = _mm512_sub_ps(tv, column(kNormalTableCenter));  // exact
  __m512 r = column(kNormalTableDegree);
  for (int k = kNormalTableDegree - 1; k >= 0; --k) r = _mm512_fmadd_ps(r, s, column(k));
  return r;
}

// half_normal_quantile(octave, mant23) for 16 lanes.
inline __m512 quantile(const Table& t, __m512i octave, __m512i mant23) {
  const __m512i row = _mm512_or_si512(_mm512_slli_epi32(octave, 1), _mm512_srli_epi32(mant23, 22));
  const __m512 tv = _mm512_castsi512_ps(_mm512_or_si512(mant23, _mm512_set1_epi32(0x3f800000)));
  // Rows below 32 are octaves below 16 (q < 2^-16): about one vector in 4096 needs them.
  const __mmask16 low_rows = _mm512_cmplt_epi32_mask(row, _mm512_set1_epi32(32));
  if (__builtin_expect(low_rows != 0, 0)) return horner<true>(t, row, low_rows, tv);
  return horner<false>(t, row, low_rows, tv);
}

inline __m512 standard_normal16(const Table& t, __m512i w) {
  const __m512i k = _mm512_or_si512(_mm512_slli_epi32(w, 1), _mm512_set1_epi32(1));
  const __m512i lz = _mm512_lzcnt_epi32(k);
  const __m512i mant23 = _mm512_and_si512(_mm512_srli_epi32(_mm512_sllv_epi32(k, lz), 8),
                                          _mm512_set1_epi32(0x7fffff));
  const __m512i octave = _mm512_sub_epi32(_mm512_set1_epi32(31), lz);
  const __m512 r = quantile(t, octave, mant23);
  const __m512i sign = _mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(r), sign));
}

inline __m512 select_lt(__m512 v, __m512 bound) {  // v < bound ? bound : v
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, bound, _CMP_LT_OQ), v, bound);
}
inline __m512 select_gt(__m512 v, __m512 bound) {  // v > bound ? bound : v
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, bound, _CMP_GT_OQ), v, bound);
}

inline __m512 value16(const Job& job, const Table& t, __m512i w) {
  const __m512 p0 = _mm512_set1_ps(job.p[0]);
  const __m512 p1 = _mm512_set1_ps(job.p[1]);
  switch (job.kind) {
    case kNormal:
      return _mm512_fmadd_ps(p1, standard_normal16(t, w), p0);
    case kUniform: {
      const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(w, 8)),
                                     _mm512_set1_ps(0x1p-24f));
      return _mm512_fmadd_ps(_mm512_sub_ps(p1, p0), u, p0);
    }
    case kTruncNormal: {
      const __m512i odd = _mm512_or_si512(_mm512_slli_epi32(_mm512_srli_epi32(w, 9), 1),
                                          _mm512_set1_epi32(1));
      const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(odd), _mm512_set1_ps(0x1p-24f));
      const __m512 plo = _mm512_set1_ps(job.p[4]);
      const __m512 p = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_set1_ps(job.p[5]), plo), u, plo);
      const __mmask16 lower = _mm512_cmp_ps_mask(p, _mm512_set1_ps(0.5f), _CMP_LT_OQ);
      const __m512 tail = _mm512_mask_blend_ps(lower, _mm512_sub_ps(_mm512_set1_ps(1.0f), p), p);
      __m512 q = _mm512_add_ps(tail, tail);
      q = select_lt(q, _mm512_set1_ps(0x1p-32f));
      q = select_gt(q, _mm512_set1_ps(0x1.fffffep-1f));
      const __m512i b = _mm512_castps_si512(q);
      const __m512i octave = _mm512_sub_epi32(_mm512_srli_epi32(b, 23), _mm512_set1_epi32(95));
      const __m512i mant23 = _mm512_and_si512(b, _mm512_set1_epi32(0x7fffff));
      __m512 z = quantile(t, octave, mant23);
      // Negation flips the sign bit (as the scalar -z does, also for zero).
      z = _mm512_castsi512_ps(_mm512_mask_xor_epi32(
          _mm512_castps_si512(z), lower, _mm512_castps_si512(z),
          _mm512_set1_epi32(static_cast<int>(0x80000000u))));
      __m512 v = _mm512_fmadd_ps(p1, z, p0);
      v = select_lt(v, _mm512_set1_ps(job.p[2]));
      v = select_gt(v, _mm512_set1_ps(job.p[3]));
      return v;
    }
    default:
      return p0;
  }
}

const Table& table() {
  static const Table t;
  return t;
}

void values_block(const Job& job, const uint32_t* words, int64_t n, float* out) {
  const Table& t = table();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    _mm512_storeu_ps(out + k, value16(job, t, _mm512_loadu_si512(words + k)));
  }
  if (k < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - k)) - 1u);
    _mm512_mask_storeu_ps(out + k, m, value16(job, t, _mm512_maskz_loadu_epi32(m, words + k)));
  }
}

void values(const Job& job, uint64_t seed, uint64_t first, int64_t n, float* out) {
  alignas(64) uint32_t words[kBlock];
  for (int64_t done = 0; done < n; done += kBlock) {
    const int64_t m = n - done < kBlock ? n - done : kBlock;
    if (job.kind == kConstant) {
      for (int64_t k = 0; k < m; ++k) out[done + k] = job.p[0];
      continue;
    }
    words_block(seed, job.stream, first + done, m, words);
    values_block(job, words, m, out + done);
  }
}

inline __m512i next_down16(__m512i bits, __m512i sign_bit) {
  const __m512i magnitude = _mm512_andnot_si512(sign_bit, bits);
  const __mmask16 zero = _mm512_cmpeq_epi32_mask(magnitude, _mm512_setzero_si512());
  const __mmask16 negative = _mm512_test_epi32_mask(bits, sign_bit);
  __m512i r = _mm512_mask_add_epi32(_mm512_sub_epi32(bits, _mm512_set1_epi32(1)), negative, bits,
                                    _mm512_set1_epi32(1));
  return _mm512_mask_mov_epi32(r, zero, _mm512_or_si512(sign_bit, _mm512_set1_epi32(1)));
}

// Converts 16 values to the destination format; `m` masks the lanes to write.
inline void store16(const Job& job, bool finish, __m512 v, DType dtype, char* dst, __mmask16 m) {
  const __m512 b = _mm512_set1_ps(job.p[1]);
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat64: {
      if (finish) {
        const __mmask16 up = _mm512_cmp_ps_mask(v, b, _CMP_GE_OQ);
        const __m512i nd = next_down16(_mm512_castps_si512(v),
                                       _mm512_set1_epi32(static_cast<int>(0x80000000u)));
        v = _mm512_mask_mov_ps(v, up, _mm512_castsi512_ps(nd));
      }
      if (dtype == DType::kFloat32) {
        _mm512_mask_storeu_ps(dst, m, v);
      } else {
        _mm512_mask_storeu_pd(dst, static_cast<__mmask8>(m), _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        _mm512_mask_storeu_pd(dst + 64, static_cast<__mmask8>(m >> 8),
                              _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
      }
      break;
    }
    case DType::kBFloat16: {
      const __m512i x = _mm512_castps_si512(v);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
      __m512i h = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), lsb), 16);
      if (finish) {
        const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
        const __mmask16 up = _mm512_cmp_ps_mask(back, b, _CMP_GE_OQ);
        h = _mm512_mask_mov_epi32(h, up, next_down16(h, _mm512_set1_epi32(0x8000)));
      }
      _mm256_mask_storeu_epi16(dst, m, _mm512_cvtepi32_epi16(h));
      break;
    }
    case DType::kFloat16: {
      __m256i h16 = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      if (finish) {
        const __m512 back = _mm512_cvtph_ps(h16);
        const __mmask16 up = _mm512_cmp_ps_mask(back, b, _CMP_GE_OQ);
        __m512i h = _mm512_cvtepu16_epi32(h16);
        h = _mm512_mask_mov_epi32(h, up, next_down16(h, _mm512_set1_epi32(0x8000)));
        h16 = _mm512_cvtepi32_epi16(h);
      }
      _mm256_mask_storeu_epi16(dst, m, h16);
      break;
    }
  }
}

void fill(const Job& job, uint64_t seed, uint64_t first, int64_t n, DType dtype, void* dst) {
  alignas(64) uint32_t words[kBlock];
  const Table& t = table();
  const bool finish = uniform_needs_finish(job);
  const int64_t esize = dtype_size(dtype);
  char* out = static_cast<char*>(dst);
  for (int64_t done = 0; done < n; done += kBlock) {
    const int64_t m = n - done < kBlock ? n - done : kBlock;
    if (job.kind != kConstant) words_block(seed, job.stream, first + done, m, words);
    for (int64_t k = 0; k < m; k += 16) {
      const int64_t lanes = m - k < 16 ? m - k : 16;
      const __mmask16 mask = static_cast<__mmask16>(lanes == 16 ? 0xFFFFu : (1u << lanes) - 1u);
      const __m512 v = job.kind == kConstant
                           ? _mm512_set1_ps(job.p[0])
                           : value16(job, t, _mm512_maskz_loadu_epi32(mask, words + k));
      store16(job, finish, v, dtype, out + (done + k) * esize, mask);
    }
  }
}

}  // namespace

BlockKernels kernels() { return BlockKernels{"avx512", &fill, &values, &values_block}; }

}  // namespace avx512

BlockKernels avx512_kernels() { return avx512::kernels(); }

}  // namespace cpu
}  // namespace fusedinit
#if !defined(FUSEDINIT_AVX512_SIMDE)
#pragma GCC pop_options
#endif
#else
#include "block_kernels.h"
namespace fusedinit {
namespace cpu {
BlockKernels avx512_kernels() { return generic_kernels(); }
}  // namespace cpu
}  // namespace fusedinit
#endif
