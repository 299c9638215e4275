// AVX2 + FMA block kernels: Philox on 4 counters per vector (one uint32 per 64-bit lane, so
// vpmuludq yields both halves of each product), the quantile table read one 32-byte row per
// lane and transposed in registers, conversion and store in one pass.
// Same operations in the same order as rng_math.h, so the bits equal the portable kernels.
// Selected at run time only on CPUs that report AVX2, FMA and BMI2 (isa.cpp); the fp16 store
// also needs F16C, checked here, with the scalar store where it is missing.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// Library headers come before the target pragma: an inline function of theirs compiled for a
// wider ISA here could otherwise be the copy the linker keeps for every caller.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")

#include "block_kernels.h"

namespace fusedinit {
namespace cpu {
namespace avx2 {
namespace {

constexpr int64_t kBlock = 1024;  // elements per inner block, a multiple of 64
constexpr int kBatches = 8;       // Philox vectors interleaved to hide the multiplier latency
constexpr int kBatchWords = 16 * kBatches;

// Philox4x32-10 for kBatches x 4 consecutive groups starting at group g, each uint32 in the
// low half of a 64-bit lane: vpmuludq reads only the low halves, so the upper ones need no
// masking. Writes kBatchWords words in element order.
inline void philox4(uint64_t g, __m256i c2_init, __m256i c3_init, const __m256i* k0,
                    const __m256i* k1, uint32_t* out) {
  const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
  __m256i c0[kBatches], c1[kBatches], c2[kBatches], c3[kBatches];
  for (int b = 0; b < kBatches; ++b) {
    const __m256i group =
        _mm256_add_epi64(_mm256_set1_epi64x(static_cast<int64_t>(g + 4 * b)), lane);
    c0[b] = group;
    c1[b] = _mm256_srli_epi64(group, 32);
    c2[b] = c2_init;
    c3[b] = c3_init;
  }
  const __m256i m0 = _mm256_set1_epi64x(kPhiloxM0);
  const __m256i m1 = _mm256_set1_epi64x(kPhiloxM1);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    for (int b = 0; b < kBatches; ++b) {
      const __m256i p0 = _mm256_mul_epu32(c0[b], m0);
      const __m256i p1 = _mm256_mul_epu32(c2[b], m1);
      c0[b] = _mm256_xor_si256(_mm256_xor_si256(_mm256_shuffle_epi32(p1, 0xB1), c1[b]), k0[r]);
      c2[b] = _mm256_xor_si256(_mm256_xor_si256(_mm256_shuffle_epi32(p0, 0xB1), c3[b]), k1[r]);
      c1[b] = p1;
      c3[b] = p0;
    }
  }
  for (int b = 0; b < kBatches; ++b) {
    // [c0 c1] and [c2 c3] per group, then groups in order across the 128-bit lanes.
    const __m256i c01 = _mm256_blend_epi32(c0[b], _mm256_slli_epi64(c1[b], 32), 0xAA);
    const __m256i c23 = _mm256_blend_epi32(c2[b], _mm256_slli_epi64(c3[b], 32), 0xAA);
    const __m256i lo = _mm256_unpacklo_epi64(c01, c23);  // groups 0, 2
    const __m256i hi = _mm256_unpackhi_epi64(c01, c23);  // groups 1, 3
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * b),
                        _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * b + 8),
                        _mm256_permute2x128_si256(lo, hi, 0x31));
  }
}

// out[k] = word of element first + k, for k < n (n <= kBlock).
void words_block(uint64_t seed, uint64_t stream, uint64_t first, int64_t n, uint32_t* out) {
  __m256i k0[kPhiloxRounds], k1[kPhiloxRounds];
  uint32_t a = static_cast<uint32_t>(seed), b = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    k0[r] = _mm256_set1_epi64x(a);
    k1[r] = _mm256_set1_epi64x(b);
    a += kPhiloxW0;
    b += kPhiloxW1;
  }
  const __m256i c2 = _mm256_set1_epi64x(static_cast<uint32_t>(stream));
  const __m256i c3 = _mm256_set1_epi64x(static_cast<uint32_t>(stream >> 32));
  const uint64_t g0 = first >> 2;
  const int64_t skip = static_cast<int64_t>(first & 3);
  const int64_t groups = (skip + n + 3) >> 2;
  constexpr int64_t kBatchGroups = kBatchWords / 4;
  if (skip == 0 && n % kBatchWords == 0) {  // whole batches: straight into the output
    for (int64_t g = 0; g < groups; g += kBatchGroups) philox4(g0 + g, c2, c3, k0, k1, out + 4 * g);
    return;
  }
  alignas(32) uint32_t tmp[kBlock + 4 + kBatchWords];
  for (int64_t g = 0; g < groups; g += kBatchGroups) philox4(g0 + g, c2, c3, k0, k1, tmp + 4 * g);
  std::memcpy(out, tmp + skip, static_cast<size_t>(n) * sizeof(uint32_t));
}

// The table row-major: row r's 8 columns (c0..c6, m) in one 32-byte line.
struct Table {
  alignas(32) float rows[kNormalTableRows][kNormalTableColumns];
  Table() {
    for (int r = 0; r < kNormalTableRows; ++r)
      for (int k = 0; k < kNormalTableColumns; ++k) rows[r][k] = kNormalTable[k][r];
  }
};

const Table& table() {
  static const Table t;
  return t;
}

// Columns 0..7 of the rows of the 8 lanes. Each lane's row is one 32-byte line; lanes l and
// l + 4 share a register (a 16-byte load and a 16-byte insert per half line), and an in-lane
// 4x4 transpose per half turns those into columns in lane order: 16 loads and 16 in-lane
// shuffles for any of the 64 rows. (Permutes over table registers cover 16 rows with 16
// cross-lane permutes and 8 blends a vector - and cross-lane permutes issue once per two
// cycles on some x86 cores, AMD Zen 3 among them - leaving the other rows to gathers.)
inline void table_columns(const Table& t, __m256i row, __m256 col[kNormalTableColumns]) {
  alignas(32) uint32_t offset[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(offset), _mm256_slli_epi32(row, 5));
  const char* base = reinterpret_cast<const char*>(&t.rows[0][0]);
  for (int half = 0; half < 2; ++half) {
    __m256 x[4];
    for (int l = 0; l < 4; ++l) {
      x[l] = _mm256_loadu2_m128(reinterpret_cast<const float*>(base + offset[l + 4] + 16 * half),
                                reinterpret_cast<const float*>(base + offset[l] + 16 * half));
    }
    const __m256d t0 = _mm256_castps_pd(_mm256_unpacklo_ps(x[0], x[1]));  // a0 b0 a1 b1
    const __m256d t1 = _mm256_castps_pd(_mm256_unpackhi_ps(x[0], x[1]));  // a2 b2 a3 b3
    const __m256d t2 = _mm256_castps_pd(_mm256_unpacklo_ps(x[2], x[3]));  // c0 d0 c1 d1
    const __m256d t3 = _mm256_castps_pd(_mm256_unpackhi_ps(x[2], x[3]));  // c2 d2 c3 d3
    col[4 * half + 0] = _mm256_castpd_ps(_mm256_unpacklo_pd(t0, t2));     // a0 b0 c0 d0
    col[4 * half + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(t0, t2));
    col[4 * half + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(t1, t3));
    col[4 * half + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(t1, t3));
  }
}

// half_normal_quantile(octave, mant23) for N vectors of 8 lanes, one vector after the other:
// each vector's work is short enough that the core overlaps consecutive vectors itself.
template <int N>
inline void quantile(const Table& t, const __m256i* octave, const __m256i* mant23, __m256* r) {
  for (int v = 0; v < N; ++v) {
    const __m256i row =
        _mm256_add_epi32(_mm256_slli_epi32(octave[v], 1), _mm256_srli_epi32(mant23[v], 22));
    const __m256 tv =
        _mm256_castsi256_ps(_mm256_or_si256(mant23[v], _mm256_set1_epi32(0x3f800000)));
    __m256 col[kNormalTableColumns];
    table_columns(t, row, col);
    const __m256 s = _mm256_sub_ps(tv, col[kNormalTableCenter]);  // exact
    r[v] = col[kNormalTableDegree];
    for (int k = kNormalTableDegree - 1; k >= 0; --k) r[v] = _mm256_fmadd_ps(r[v], s, col[k]);
  }
}

template <int N>
inline void standard_normal(const Table& t, const __m256i* w, __m256* z) {
  __m256i octave[N], mant23[N];
  for (int v = 0; v < N; ++v) {
    // k = 2b + 1 with b the low 31 bits of w: octave(k) = octave(b) + 1, or 0 when b = 0.
    // b & ~(b >> 1) keeps b's top bit and clears the one below it, so its conversion to float
    // cannot round up into the next binade: the exponent field is exactly 127 + octave(b).
    const __m256i bits = _mm256_and_si256(w[v], _mm256_set1_epi32(0x7fffffff));
    const __m256i top = _mm256_andnot_si256(_mm256_srli_epi32(bits, 1), bits);
    const __m256i e = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(top)), 23);
    octave[v] = _mm256_max_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(126)),
                                 _mm256_setzero_si256());
    const __m256i k = _mm256_or_si256(_mm256_slli_epi32(w[v], 1), _mm256_set1_epi32(1));
    const __m256i lz = _mm256_sub_epi32(_mm256_set1_epi32(31), octave[v]);
    mant23[v] = _mm256_and_si256(_mm256_srli_epi32(_mm256_sllv_epi32(k, lz), 8),
                                 _mm256_set1_epi32(0x7fffff));
  }
  quantile<N>(t, octave, mant23, z);
  for (int v = 0; v < N; ++v) {
    const __m256i sign = _mm256_and_si256(w[v], _mm256_set1_epi32(static_cast<int>(0x80000000u)));
    z[v] = _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(z[v]), sign));
  }
}

// One instruction each: vmaxps(x, y) is exactly x > y ? x : y and vminps(x, y) exactly
// x < y ? x : y (the second operand for equal values, zeros of either sign and NaN), so with
// the bound first these are the contract's selects bit for bit, -0.0 and NaN included.
inline __m256 select_lt(__m256 v, __m256 bound) {  // v < bound ? bound : v
  return _mm256_max_ps(bound, v);
}
inline __m256 select_gt(__m256 v, __m256 bound) {  // v > bound ? bound : v
  return _mm256_min_ps(bound, v);
}

// The float32 values of N vectors of words.
template <int N>
inline void values_n(const Job& job, const Table& t, const __m256i* w, __m256* out) {
  const __m256 p0 = _mm256_set1_ps(job.p[0]);
  const __m256 p1 = _mm256_set1_ps(job.p[1]);
  switch (job.kind) {
    case kNormal: {
      standard_normal<N>(t, w, out);
      for (int v = 0; v < N; ++v) out[v] = _mm256_fmadd_ps(p1, out[v], p0);
      return;
    }
    case kUniform: {
      for (int v = 0; v < N; ++v) {
        const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w[v], 8)),
                                       _mm256_set1_ps(0x1p-24f));
        out[v] = _mm256_fmadd_ps(_mm256_sub_ps(p1, p0), u, p0);
      }
      return;
    }
    case kTruncNormal: {
      __m256i octave[N], mant23[N];
      __m256 lower[N];
      for (int v = 0; v < N; ++v) {
        const __m256i odd = _mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(w[v], 9), 1),
                                            _mm256_set1_epi32(1));
        const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(odd), _mm256_set1_ps(0x1p-24f));
        const __m256 plo = _mm256_set1_ps(job.p[4]);
        const __m256 p = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_set1_ps(job.p[5]), plo), u, plo);
        lower[v] = _mm256_cmp_ps(p, _mm256_set1_ps(0.5f), _CMP_LT_OQ);
        const __m256 tail = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), p), p, lower[v]);
        __m256 q = _mm256_add_ps(tail, tail);
        q = select_lt(q, _mm256_set1_ps(0x1p-32f));
        q = select_gt(q, _mm256_set1_ps(0x1.fffffep-1f));
        const __m256i b = _mm256_castps_si256(q);
        octave[v] = _mm256_sub_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(95));
        mant23[v] = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffff));
      }
      quantile<N>(t, octave, mant23, out);
      for (int v = 0; v < N; ++v) {
        // Negation flips the sign bit (as the scalar -z does, also for zero).
        const __m256 z = _mm256_xor_ps(out[v], _mm256_and_ps(lower[v], _mm256_set1_ps(-0.0f)));
        __m256 x = _mm256_fmadd_ps(p1, z, p0);
        x = select_lt(x, _mm256_set1_ps(job.p[2]));
        out[v] = select_gt(x, _mm256_set1_ps(job.p[3]));
      }
      return;
    }
    default:
      for (int v = 0; v < N; ++v) out[v] = p0;
      return;
  }
}

constexpr int kVectors = 8;  // vectors of words transformed together (values_n)

inline __m256 value8(const Job& job, const Table& t, __m256i w) {
  __m256 v;
  values_n<1>(job, t, &w, &v);
  return v;
}

// The values of the first n < 8 words (the rest of the vector reads zeros).
inline __m256 value8_partial(const Job& job, const Table& t, const uint32_t* words, int64_t n) {
  alignas(32) uint32_t w[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(w, words, static_cast<size_t>(n) * sizeof(uint32_t));
  return value8(job, t, _mm256_load_si256(reinterpret_cast<const __m256i*>(w)));
}

void values_block(const Job& job, const uint32_t* words, int64_t n, float* out) {
  const Table& t = table();
  int64_t k = 0;
  for (; k + 8 * kVectors <= n; k += 8 * kVectors) {
    __m256i w[kVectors];
    __m256 v[kVectors];
    for (int i = 0; i < kVectors; ++i) {
      w[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + k + 8 * i));
    }
    values_n<kVectors>(job, t, w, v);
    for (int i = 0; i < kVectors; ++i) _mm256_storeu_ps(out + k + 8 * i, v[i]);
  }
  for (; k + 8 <= n; k += 8) {
    _mm256_storeu_ps(out + k,
                     value8(job, t, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + k))));
  }
  if (k < n) {
    alignas(32) float v[8];
    _mm256_store_ps(v, value8_partial(job, t, words + k, n - k));
    std::memcpy(out + k, v, static_cast<size_t>(n - k) * sizeof(float));
  }
}

void values(const Job& job, uint64_t seed, uint64_t first, int64_t n, float* out) {
  alignas(32) uint32_t words[kBlock];
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

inline __m256i next_down8(__m256i bits, __m256i sign_bit) {
  const __m256i magnitude = _mm256_andnot_si256(sign_bit, bits);
  const __m256i zero = _mm256_cmpeq_epi32(magnitude, _mm256_setzero_si256());
  const __m256i negative = _mm256_cmpeq_epi32(_mm256_and_si256(bits, sign_bit), sign_bit);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i r = _mm256_blendv_epi8(_mm256_sub_epi32(bits, one), _mm256_add_epi32(bits, one),
                                       negative);
  return _mm256_blendv_epi8(r, _mm256_or_si256(sign_bit, one), zero);
}

// 8 uint16 values held in 32-bit lanes, in order.
inline __m128i narrow16(__m256i h) {
  return _mm_packus_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// Converts 8 values to the destination format and writes all 8.
inline void store8(const Job& job, bool finish, bool f16c, __m256 v, DType dtype, char* dst) {
  const __m256 b = _mm256_set1_ps(job.p[1]);
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat64: {
      if (finish) {
        const __m256 up = _mm256_cmp_ps(v, b, _CMP_GE_OQ);
        const __m256i nd = next_down8(_mm256_castps_si256(v),
                                      _mm256_set1_epi32(static_cast<int>(0x80000000u)));
        v = _mm256_blendv_ps(v, _mm256_castsi256_ps(nd), up);
      }
      if (dtype == DType::kFloat32) {
        _mm256_storeu_ps(reinterpret_cast<float*>(dst), v);
      } else {
        _mm256_storeu_pd(reinterpret_cast<double*>(dst), _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        _mm256_storeu_pd(reinterpret_cast<double*>(dst + 32),
                         _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
      }
      break;
    }
    case DType::kBFloat16: {
      const __m256i x = _mm256_castps_si256(v);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
      __m256i h = _mm256_srli_epi32(
          _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
      if (finish) {
        const __m256 back = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        const __m256i up = _mm256_castps_si256(_mm256_cmp_ps(back, b, _CMP_GE_OQ));
        h = _mm256_blendv_epi8(h, next_down8(h, _mm256_set1_epi32(0x8000)), up);
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), narrow16(h));
      break;
    }
    case DType::kFloat16: {
      if (!f16c) {  // no vector conversion: the scalar contract, lane by lane
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, v);
        for (int l = 0; l < 8; ++l) store_scalar(job, lanes[l], dtype, dst + 2 * l);
        break;
      }
      __m128i h16 = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      if (finish) {
        const __m256 back = _mm256_cvtph_ps(h16);
        const __m256i up = _mm256_castps_si256(_mm256_cmp_ps(back, b, _CMP_GE_OQ));
        __m256i h = _mm256_cvtepu16_epi32(h16);
        h = _mm256_blendv_epi8(h, next_down8(h, _mm256_set1_epi32(0x8000)), up);
        h16 = narrow16(h);
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), h16);
      break;
    }
  }
}

bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("f16c");
  return has;
}

void fill(const Job& job, uint64_t seed, uint64_t first, int64_t n, DType dtype, void* dst) {
  alignas(32) uint32_t words[kBlock];
  const Table& t = table();
  const bool finish = uniform_needs_finish(job);
  const bool f16c = cpu_has_f16c();
  const int64_t esize = dtype_size(dtype);
  char* out = static_cast<char*>(dst);
  for (int64_t done = 0; done < n; done += kBlock) {
    const int64_t m = n - done < kBlock ? n - done : kBlock;
    if (job.kind != kConstant) words_block(seed, job.stream, first + done, m, words);
    int64_t k = 0;
    if (job.kind != kConstant) {
      for (; k + 8 * kVectors <= m; k += 8 * kVectors) {
        __m256i w[kVectors];
        __m256 v[kVectors];
        for (int i = 0; i < kVectors; ++i) {
          w[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + k + 8 * i));
        }
        values_n<kVectors>(job, t, w, v);
        for (int i = 0; i < kVectors; ++i) {
          store8(job, finish, f16c, v[i], dtype, out + (done + k + 8 * i) * esize);
        }
      }
    }
    for (; k + 8 <= m; k += 8) {
      const __m256 v =
          job.kind == kConstant
              ? _mm256_set1_ps(job.p[0])
              : value8(job, t, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + k)));
      store8(job, finish, f16c, v, dtype, out + (done + k) * esize);
    }
    if (k < m) {  // the last few elements: vector values, scalar stores
      alignas(32) float v[8];
      _mm256_store_ps(v, job.kind == kConstant ? _mm256_set1_ps(job.p[0])
                                               : value8_partial(job, t, words + k, m - k));
      for (int64_t l = 0; l < m - k; ++l) {
        store_scalar(job, v[l], dtype, out + (done + k + l) * esize);
      }
    }
  }
}

}  // namespace

BlockKernels kernels() { return BlockKernels{"avx2", &fill, &values, &values_block}; }

}  // namespace avx2

BlockKernels avx2_kernels() { return avx2::kernels(); }

}  // namespace cpu
}  // namespace fusedinit
#pragma GCC pop_options
#else
#include "block_kernels.h"
namespace fusedinit {
namespace cpu {
BlockKernels avx2_kernels() { return generic_kernels(); }
}  // namespace cpu
}  // namespace fusedinit
#endif
