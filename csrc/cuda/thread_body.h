// The code each CUDA thread runs, as a __host__ __device__ function of (block, grid, thread,
// block size) and the launch arguments. init_kernel.cu wraps it in a __global__; emulate.cpp
// runs it on the host over an emulated grid, which is how CI (no GPU) tests this code path.
#pragma once

#include "fusedinit/rng_math.h"
#include "launch_layout.h"

#include <type_traits>

#if defined(__CUDA_ARCH__)
#include <vector_types.h>
#endif

namespace fusedinit {
namespace gpu {

// The normal table as each block keeps it in shared memory: a row's eight columns in groups
// of kTableWidth (2: (c0, c1), (c2, c3), (c4, c5), (c6, m)), each group in its own array, so a
// row is 8 / kTableWidth loads from one address register (the arrays sit at fixed offsets).
// The rows the words select cluster at the top of the table (half the lookups go to the last
// two rows, a quarter to the two below...). With 8-byte groups, 16 consecutive rows share no
// bank and a 64-bit load is served in half-warp phases; 16-byte groups save two loads a value
// but put rows r and r + 8 on the same banks in quarter-warp phases, and the shared-memory
// model (benchmarks/sass_report.py, TABLE_LOADS mirrors these loads) then puts the kernel at
// 0.325 wavefronts a value against 0.263 here: more than the two instructions save (a
// wavefront a cycle per SM against 128 thread-instructions a cycle), so 8-byte groups.
//
// The normal reads a scaled copy of the table (`scaled`); the truncated normal reads the
// table as it is (`plain`). With E = kScaleExponent and o = the row's octave, the scaled row
// is c_k * 2^(k (E - o)) for k = 0..6 and -m * 2^(o - E). Then, for f = the word's k rounded
// toward zero to float32 (f = t * 2^o exactly, t in [1, 2)):
//   s' = fma(f, 2^-E, -m 2^(o - E)) = (t - m) 2^(o - E) = s 2^(o - E) exactly: f 2^-E is
//        exact (no underflow) and shares the binade [2^(o-E), 2^(o-E+1)) and the grid
//        2^(o-E-23) with m 2^(o - E), so the difference is exact (as s = t - m is);
//   r'_k = fma(r'_(k+1), s', c'_k) = r_k 2^(k (E - o)): the exact product and sum are those of
//        the unscaled step times 2^(k (E - o)), and rounding to nearest commutes with a power
//        of two while everything stays normal float32 (|k (E - o)| <= 96 for E = 16: the
//        scaled coefficients and partial sums stay far inside the normal range).
// So r'_0 is the contract's quantile bit for bit, with one fma for s instead of extracting
// t (a lop3 with two constant registers) and subtracting m. tools/check_scaled_quantile.cpp
// checks it against standard_normal for every word.
constexpr int kTableWidth = 2;  // floats per shared-memory load (2 or 4)
static_assert(kNormalTableColumns % kTableWidth == 0, "a row is whole groups of columns");
constexpr int kTableGroups = kNormalTableColumns / kTableWidth;
constexpr int kScaleExponent = 16;

struct SharedTable {
  alignas(16) float scaled[kTableGroups][kNormalTableRows][kTableWidth];
  alignas(16) float plain[kTableGroups][kNormalTableRows][kTableWidth];
};

// 2^e as a float32 (normal range).
FI_HD float pow2f(int e) { return bits_to_float(static_cast<uint32_t>(127 + e) << 23); }

// Column k of row `row`, scaled for the normal's evaluation (see SharedTable).
FI_HD float scaled_coefficient(int k, int row) {
  const int octave = row / 2;
  const float c = normal_coefficient(k, static_cast<uint32_t>(row));
  if (k == kNormalTableCenter) return -mul_rn(c, pow2f(octave - kScaleExponent));
  return mul_rn(c, pow2f(k * (kScaleExponent - octave)));
}

// Written by the threads of a block in parallel: thread t writes entries t, t + threads, ...
FI_HD void fill_table(SharedTable& table, int thread, int threads) {
  constexpr int kEntries = kNormalTableRows * kNormalTableColumns;
  for (int i = thread; i < 2 * kEntries; i += threads) {
    const int j = i % kEntries, group = j / (kNormalTableRows * kTableWidth);
    const int row = j / kTableWidth % kNormalTableRows, k = kTableWidth * group + j % kTableWidth;
    if (i < kEntries) {
      table.scaled[group][row][j % kTableWidth] = scaled_coefficient(k, row);
    } else {
      table.plain[group][row][j % kTableWidth] = normal_coefficient(k, static_cast<uint32_t>(row));
    }
  }
}

FI_HD void load_row(const float (*groups)[kNormalTableRows][kTableWidth], uint32_t r,
                    float c[kNormalTableColumns]) {
#pragma unroll
  for (int group = 0; group < kTableGroups; ++group) {
#if defined(__CUDA_ARCH__)
    if constexpr (kTableWidth == 4) {
      const float4 v = *reinterpret_cast<const float4*>(groups[group][r]);
      c[4 * group] = v.x;
      c[4 * group + 1] = v.y;
      c[4 * group + 2] = v.z;
      c[4 * group + 3] = v.w;
    } else {
      const float2 v = *reinterpret_cast<const float2*>(groups[group][r]);
      c[2 * group] = v.x;
      c[2 * group + 1] = v.y;
    }
#else
    for (int k = 0; k < kTableWidth; ++k) c[kTableWidth * group + k] = groups[group][r][k];
#endif
  }
}

struct RowTable {
  const SharedTable* table;
  // The contract's row (GlobalTable's interface): the truncated normal's quantile.
  FI_HD_MEMBER void row(uint32_t r, float c[kNormalTableColumns]) const {
    load_row(table->plain, r, c);
  }

  // standard_normal(w) (rng_math.h) from the scaled rows, bit for bit (see SharedTable).
  FI_HD_MEMBER float standard_normal(uint32_t w) const {
    const uint32_t k = (w << 1) | 1u;
#if defined(__CUDA_ARCH__)
    // k rounded toward zero to float32: (127 + octave) << 23 | mant23 (rng_math.h normal_word).
    const uint32_t f = __float_as_uint(__uint2float_rz(k));
    // Opaque to the optimiser, which would otherwise rewrite (f >> 22) * 16 + base as a
    // shift, a mask and an add.
    uint32_t top = f >> 22;
    asm("" : "+r"(top));
#else
    const NormalWord n = normal_word(w);
    const uint32_t f = (127u + n.octave) << 23 | n.mant23;
    const uint32_t top = f >> 22;
#endif
    float c[kNormalTableColumns];
    load_row(table->scaled, top - 254u, c);  // quantile_row: 2 * octave + top mantissa bit
    const float s = fma_rn(bits_to_float(f), pow2f(-kScaleExponent), c[kNormalTableCenter]);
    return apply_sign(horner6(s, c), w);
  }
};

// The normal's value through `rows`: RowTable's scaled evaluation where there is one.
template <class Rows>
FI_HD float kernel_normal_value(uint32_t w, float mean, float std, const Rows& rows) {
  if constexpr (std::is_same_v<Rows, RowTable>) {
    return fma_rn(std, rows.standard_normal(w), mean);
  } else {
    return normal_value(w, mean, std, rows);
  }
}

// ---- stores ----------------------------------------------------------------------------
template <Store S> struct StoreTraits;
template <> struct StoreTraits<Store::kFloat32> { static constexpr int kSize = 4, kUnit = 4; };
template <> struct StoreTraits<Store::kFloat64> { static constexpr int kSize = 8, kUnit = 4; };
template <> struct StoreTraits<Store::kBFloat16> { static constexpr int kSize = 2, kUnit = 8; };
template <> struct StoreTraits<Store::kFloat16> { static constexpr int kSize = 2, kUnit = 8; };

// Two values rounded to nearest even and packed (lo in the low half). On the device one
// cvt.rn.{bf16,f16}x2.f32 does both (same rounding, subnormals kept: no .ftz).
FI_HD uint32_t pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return static_cast<uint32_t>(float_to_bf16_bits(lo)) |
         static_cast<uint32_t>(float_to_bf16_bits(hi)) << 16;
#endif
}

FI_HD uint32_t pack_fp16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return static_cast<uint32_t>(float_to_fp16_bits(lo)) |
         static_cast<uint32_t>(float_to_fp16_bits(hi)) << 16;
#endif
}

FI_HD void store16(char* dst, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
#if defined(__CUDA_ARCH__)
  // Explicitly global (STG.E.128): the descriptor's pointer alone does not tell nvcc.
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(a), "r"(b), "r"(c),
               "r"(d)
               : "memory");
#else
  const uint32_t w[4] = {a, b, c, d};
  std::memcpy(dst, w, sizeof w);
#endif
}

// One element at an address aligned to its size.
template <class T>
FI_HD void store_element(char* dst, T bits) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<T*>(dst) = bits;
#else
  std::memcpy(dst, &bits, sizeof bits);
#endif
}

// The bits of the float64 a float32 widens to.
FI_HD uint64_t f64_bits(float v) {
  const double d = static_cast<double>(v);
  uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

// kUnit values to a 16-byte aligned address (32 bytes for float64).
template <Store S>
FI_HD void store_unit(char* dst, const float* v) {
  if constexpr (S == Store::kFloat32) {
    store16(dst, float_to_bits(v[0]), float_to_bits(v[1]), float_to_bits(v[2]),
            float_to_bits(v[3]));
  } else if constexpr (S == Store::kFloat64) {
    for (int half = 0; half < 2; ++half) {
      const uint64_t a = f64_bits(v[2 * half]), b = f64_bits(v[2 * half + 1]);
      store16(dst + 16 * half, static_cast<uint32_t>(a), static_cast<uint32_t>(a >> 32),
              static_cast<uint32_t>(b), static_cast<uint32_t>(b >> 32));
    }
  } else if constexpr (S == Store::kBFloat16) {
    store16(dst, pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]),
            pack_bf16x2(v[6], v[7]));
  } else {
    store16(dst, pack_fp16x2(v[0], v[1]), pack_fp16x2(v[2], v[3]), pack_fp16x2(v[4], v[5]),
            pack_fp16x2(v[6], v[7]));
  }
}

FI_HD void store_one(char* dst, Store s, float v) {
  switch (s) {
    case Store::kFloat32: return store_element(dst, float_to_bits(v));
    case Store::kFloat64: return store_element(dst, static_cast<double>(v));
    case Store::kBFloat16: return store_element(dst, static_cast<uint16_t>(pack_bf16x2(v, 0.0f)));
    case Store::kFloat16: return store_element(dst, static_cast<uint16_t>(pack_fp16x2(v, 0.0f)));
  }
}

FI_HD int store_size(Store s) {
  return s == Store::kFloat64 ? 8 : s == Store::kFloat32 ? 4 : 2;
}

// ---- Philox over a loop whose counters differ only in the low word --------------------
// philox4x32_10_keyed(c0, c1, c2, c3, keys) (rng_math.h) for counters (c0, c1, c2, c3) where
// c1 (the group's high word), c2, c3 (the stream) and the keys stay the same for a whole
// loop: what does not depend on c0 is computed once. In round 1, M1 * c2 is constant, so the
// new c0 (hi(M1 c2) ^ c1 ^ k0[0]) and c1 (lo(M1 c2)) are too; in round 2, M0 times that c0
// and so the new c3 are constant. The same integer operations on the same values as the
// contract's rounds, regrouped: every word is the same.
struct PhiloxLoop {
  uint32_t c0_1, c3_k;   // round 1: the new c0; c3 ^ k1[0]
  uint32_t k_a, k_b, c3_2;  // round 2: lo(M1 c2) ^ k0[1]; hi(M0 c0_1) ^ k1[1]; lo(M0 c0_1)

  FI_HD_MEMBER PhiloxLoop(uint32_t c1, uint32_t c2, uint32_t c3, const RoundKeys& keys) {
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
    c0_1 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ keys.k0[0];
    c3_k = c3 ^ keys.k1[0];
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0_1;
    k_a = static_cast<uint32_t>(p1) ^ keys.k0[1];
    k_b = static_cast<uint32_t>(p0 >> 32) ^ keys.k1[1];
    c3_2 = static_cast<uint32_t>(p0);
  }

  FI_HD_MEMBER Words4 operator()(uint32_t c0, const RoundKeys& keys) const {
    // Round 1: p0 = M0 c0; c0, c1 constant (above).
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
    const uint32_t c2_1 = static_cast<uint32_t>(p0 >> 32) ^ c3_k;
    // Round 2: p1 = M1 c2_1; p0 = M0 c0_1 constant (above).
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2_1;
    return philox_rounds<2>(static_cast<uint32_t>(p1 >> 32) ^ k_a, static_cast<uint32_t>(p1),
                            static_cast<uint32_t>(p0) ^ k_b, c3_2, keys);
  }
};

// ---- values ------------------------------------------------------------------------------
// The four values of a tensor's Philox group from its four words, before rounding.
template <int K, class Rows>
FI_HD void words_values(const TensorDesc& d, const Words4& w, const Rows& rows, float v[4]) {
#pragma unroll
  for (int l = 0; l < 4; ++l) {
    if constexpr (K == kNormal) {
      v[l] = kernel_normal_value(w.v[l], d.p[0], d.p[1], rows);
    } else if constexpr (K == kUniform) {
      v[l] = uniform_value(w.v[l], d.p[0], d.p[1]);
    } else {
      v[l] = trunc_normal_value(w.v[l], d.p[0], d.p[1], d.p[2], d.p[3], d.p[4], d.p[5], rows);
    }
  }
}

// The four values of logical group g (elements 4g .. 4g+3) of a tensor, before rounding.
template <int K, class Rows>
FI_HD void group_values(const TensorDesc& d, const RoundKeys& keys, int64_t g, const Rows& rows,
                        float v[4]) {
  if constexpr (K == kConstant) {
    v[0] = v[1] = v[2] = v[3] = d.p[0];
  } else {
    const uint64_t gu = static_cast<uint64_t>(g);
    const Words4 w = philox4x32_10_keyed(static_cast<uint32_t>(gu),
                                         static_cast<uint32_t>(gu >> 32),
                                         static_cast<uint32_t>(d.stream),
                                         static_cast<uint32_t>(d.stream >> 32), keys);
    words_values<K>(d, w, rows, v);
  }
}

// Uniform's bound b stays excluded after rounding to the destination: the value is replaced
// by the (exactly representable) value the contract stores, which the store then keeps.
FI_HD float finish_uniform(Store s, float v, float b) {
  switch (s) {
    case Store::kBFloat16:
      return bf16_bits_to_float(finish_uniform_bf16(float_to_bf16_bits(v), b));
    case Store::kFloat16:
      return fp16_bits_to_float(finish_uniform_fp16(float_to_fp16_bits(v), b));
    default:
      return bits_to_float(finish_uniform_f32_bits(float_to_bits(v), b));
  }
}

template <int K, int N>
FI_HD void finish_values(const TensorDesc& d, Store s, float* v) {
  if constexpr (K == kUniform) {
    if (d.p[0] < d.p[1]) {
#pragma unroll
      for (int l = 0; l < N; ++l) v[l] = finish_uniform(s, v[l], d.p[1]);
    }
  }
}

// Zero the values of `n` consecutive elements starting at logical index `first` that fall in
// the padding row.
template <int N>
FI_HD void zero_padding(const TensorDesc& d, int64_t first, float* v) {
  if (first < d.pad_end && first + N > d.pad_begin) {
#pragma unroll
    for (int l = 0; l < N; ++l) {
      const int64_t i = first + l;
      if (i >= d.pad_begin && i < d.pad_end) v[l] = 0.0f;
    }
  }
}

FI_HD int64_t strided_offset(const TensorDesc& d, int64_t i) {
  int64_t offset = 0;
  for (int k = kMaxDims - 1; k >= 0; --k) {
    if (k < d.ndim) {
      offset += (i % d.sizes[k]) * d.strides[k];
      i /= d.sizes[k];
    }
  }
  return offset;
}

// Contiguous, 16-byte aligned tensor: each thread writes whole 16-byte units, consecutive
// threads consecutive units. kChecks: the range may hold the padding row or end inside a
// unit (written element-wise), or its Philox groups may not share their high word; chunks
// without any of that run the loop without those tests.
// The loop counts in 32 bits inside the chunk (at most kChunk elements) and advances the
// Philox group and the address by a constant step: no division or 64-bit compare per unit.
// Without kChecks the groups' high word is the same for the whole range, so the loop keeps
// only the low word and Philox's constant part is computed once (PhiloxLoop).
// kFull: a whole chunk (kChunk elements), so the trip count is a compile-time constant and
// the loop unrolls by two (one compare, branch and index update per two units).
template <int K, Store S, bool kChecks, bool kRuns, bool kFull = false, class Rows>
FI_HD void vector_loop(const TensorDesc& d, const RoundKeys& keys, const Rows& rows,
                       int64_t begin, int64_t end, int thread, int block_dim) {
  constexpr int kUnit = StoreTraits<S>::kUnit;
  constexpr int kSize = StoreTraits<S>::kSize;
  const int n = kFull ? static_cast<int>(kChunk) : static_cast<int>(end - begin);
  const int step = block_dim * kUnit;
  // Without runs, units start on Philox groups (vector: offset % 8 == 0), so this is exact.
  int64_t group = (d.offset + begin + static_cast<int64_t>(thread) * kUnit) / 4;
  // Unused (and dropped by the compiler) in the kChecks loops.
  const PhiloxLoop philox(static_cast<uint32_t>(static_cast<uint64_t>(group) >> 32),
                          static_cast<uint32_t>(d.stream), static_cast<uint32_t>(d.stream >> 32),
                          keys);
  uint32_t group_lo = static_cast<uint32_t>(group);
  char* dst = d.data + (begin + static_cast<int64_t>(thread) * kUnit) * kSize;
#pragma unroll 2
  for (int i = thread * kUnit; i < n; i += step, group += step / 4, group_lo += step / 4,
           dst += static_cast<int64_t>(step) * kSize) {
    float v[kUnit];
    const int64_t first = begin + i;
    const int64_t g = kRuns ? placed_index(d.offset, d.run, d.run_stride, first) / 4 : group;
#pragma unroll
    for (int h = 0; h < kUnit / 4; ++h) {
      if constexpr (!kChecks && K != kConstant) {
        words_values<K>(d, philox(group_lo + h, keys), rows, v + 4 * h);
      } else {
        group_values<K>(d, keys, g + h, rows, v + 4 * h);
      }
    }
    finish_values<K, kUnit>(d, S, v);
    if (kChecks) zero_padding<kUnit>(d, first, v);
    if (!kChecks || i + kUnit <= n) {
      store_unit<S>(dst, v);
    } else {
#pragma unroll
      for (int l = 0; l < kUnit; ++l) {  // constant indices keep v in registers
        if (i + l < n) store_one(dst + l * kSize, S, v[l]);
      }
    }
  }
}

template <int K, Store S, class Rows>
FI_HD void run_vector(const TensorDesc& d, const RoundKeys& keys, const Rows& rows,
                      int64_t begin, int64_t end, int thread, int block_dim) {
  constexpr int kUnit = StoreTraits<S>::kUnit;
  // The range's first and last Philox groups: the same high word (all but one chunk in 2^34
  // elements of a stream) lets the loop count groups in 32 bits.
  const uint64_t first_group = static_cast<uint64_t>(d.offset + begin) / 4;
  const uint64_t last_group = static_cast<uint64_t>(d.offset + end - 1) / 4;
  const bool checks = (begin < d.pad_end && end > d.pad_begin) || (end - begin) % kUnit != 0 ||
                      (first_group >> 32) != (last_group >> 32);
  // Runs (a shard placed in a larger tensor, not just offset) cost a division per unit:
  // a loop of their own keeps it out of the common one.
  if (d.run != 0) {
    vector_loop<K, S, true, true>(d, keys, rows, begin, end, thread, block_dim);
  } else if (checks) {
    vector_loop<K, S, true, false>(d, keys, rows, begin, end, thread, block_dim);
  } else if (end - begin == kChunk) {
    vector_loop<K, S, false, false, true>(d, keys, rows, begin, end, thread, block_dim);
  } else {
    vector_loop<K, S, false, false>(d, keys, rows, begin, end, thread, block_dim);
  }
}

// Any other layout (strided, a start that is not 16-byte aligned, a placement whose runs do
// not start on Philox groups): four elements per step, each stored at its own offset; an
// element whose Philox group differs from its neighbour's gets that group computed.
template <int K, class Rows>
FI_HD void run_strided(const TensorDesc& d, const RoundKeys& keys, const Rows& rows,
                       int64_t begin, int64_t end, int thread, int block_dim) {
  const int esize = store_size(d.store);
  for (int64_t first = begin + static_cast<int64_t>(thread) * 4; first < end;
       first += static_cast<int64_t>(block_dim) * 4) {
    float v[4];
    int64_t cached = -1;
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int64_t i = first + l;
      if (i >= end) break;
      const int64_t g = placed_index(d.offset, d.run, d.run_stride, i);
      if (g / 4 != cached) {
        cached = g / 4;
        group_values<K>(d, keys, cached, rows, v);
        finish_values<K, 4>(d, d.store, v);
      }
      const float x = i >= d.pad_begin && i < d.pad_end ? 0.0f : v[g % 4];
      store_one(d.data + strided_offset(d, i) * esize, d.store, x);
    }
  }
}

template <int K, class Rows>
FI_HD void run_kind(const TensorDesc& d, const RoundKeys& keys, const Rows& rows, int64_t begin,
                    int64_t end, int thread, int block_dim) {
  if (!d.vector) return run_strided<K>(d, keys, rows, begin, end, thread, block_dim);
  switch (d.store) {
    case Store::kFloat32:
      return run_vector<K, Store::kFloat32>(d, keys, rows, begin, end, thread, block_dim);
    case Store::kFloat64:
      return run_vector<K, Store::kFloat64>(d, keys, rows, begin, end, thread, block_dim);
    case Store::kBFloat16:
      return run_vector<K, Store::kBFloat16>(d, keys, rows, begin, end, thread, block_dim);
    case Store::kFloat16:
      return run_vector<K, Store::kFloat16>(d, keys, rows, begin, end, thread, block_dim);
  }
}

// The tensor that owns `chunk`: the last one whose first chunk is <= chunk (all non-empty),
// by a binary search over all descriptors (at most 7 steps, once per chunk of kChunk values).
template <class Args>
FI_HD uint32_t tensor_of_chunk(const Args& a, uint32_t chunk) {
  uint32_t lo = 0;
  uint32_t hi = static_cast<uint32_t>(a.num_tensors - 1);
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (a.descs[mid].first_chunk <= static_cast<int64_t>(chunk)) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Runs a tensor's share of one chunk, by the descriptor's distribution: every kind in one
// kernel. (benchmarks/sass_probe.cu passes a runner of one kind and dtype alone instead, to
// count that loop's instructions.)
struct RunByKind {
  template <class Rows>
  FI_HD_MEMBER void operator()(const TensorDesc& d, const RoundKeys& keys, const Rows& rows,
                        int64_t begin, int64_t end, int thread, int block_dim) const {
    switch (d.kind) {
      case kNormal: return run_kind<kNormal>(d, keys, rows, begin, end, thread, block_dim);
      case kUniform: return run_kind<kUniform>(d, keys, rows, begin, end, thread, block_dim);
      case kTruncNormal:
        return run_kind<kTruncNormal>(d, keys, rows, begin, end, thread, block_dim);
      default: return run_kind<kConstant>(d, keys, rows, begin, end, thread, block_dim);
    }
  }
};

// Block `block` of `grid` walks the chunks block, block + grid, ...; inside a chunk its
// threads split the elements. Every element is written by exactly one thread. `Args` has
// keys, num_tensors, total_chunks and descs (LaunchArgs<N> on the device, HostLaunchArgs in
// the emulation). A launch has fewer than 2^31 chunks (split_launches checks), so the chunk
// walk counts in 32 bits: the fewer registers it holds across a chunk's work, the fewer the
// heaviest paths (strided, truncated normal) have to spill.
template <class Args, class Rows, class RunChunk = RunByKind>
FI_HD void thread_body(const Args& a, const Rows& rows, int64_t block, int64_t grid,
                       int thread, int block_dim, RunChunk run_chunk = RunChunk()) {
  const uint32_t total = static_cast<uint32_t>(a.total_chunks);
  for (uint32_t chunk = static_cast<uint32_t>(block); chunk < total;
       chunk += static_cast<uint32_t>(grid)) {
    const uint32_t owner = tensor_of_chunk(a, chunk);
    // A copy: the stores below could alias the descriptors as far as the compiler knows, and
    // a reference would make it reload every field in every iteration.
    const TensorDesc d = a.descs[owner];
    const int64_t begin = (static_cast<int64_t>(chunk) - d.first_chunk) * kChunk;
    const int64_t end = begin + kChunk < d.numel ? begin + kChunk : d.numel;
    run_chunk(d, a.keys, rows, begin, end, thread, block_dim);
  }
}

}  // namespace gpu
}  // namespace fusedinit
