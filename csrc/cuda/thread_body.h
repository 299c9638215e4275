// The code each CUDA thread runs, as a __host__ __device__ function of (block, grid, thread,
// block size) and the launch arguments. init_kernel.cu wraps it in a __global__; emulate.cpp
// runs it on the host over an emulated grid, which is how CI (no GPU) tests this code path.
#pragma once

#include "fusedinit/rng_math.h"
#include "launch_layout.h"

#if defined(__CUDA_ARCH__)
#include <vector_types.h>
#endif

namespace fusedinit {
namespace gpu {

// The normal table as each block keeps it in shared memory: the columns of a row (c0..c6 and
// the expansion point m) in pairs, each pair in its own array of 8-byte rows. A row is four
// 8-byte loads from one address register (the arrays sit at fixed offsets), and 16
// consecutive rows share no bank. Row-major 32-byte rows put rows r and r + 4 on the same
// banks, and the rows the words select cluster at the top of the table (half the lookups
// go to the last two rows, a quarter to the two below...). benchmarks/sass_report.py
// models the shared-memory wavefronts this costs per value (TABLE_LOADS there).
constexpr int kTablePairs = (kNormalTableColumns + 1) / 2;

struct SharedTable {
  alignas(16) float pairs[kTablePairs][kNormalTableRows][2];
};

// Column k of every row (zero past the last column), written by the threads of a block in
// parallel: thread t writes entries t, t + threads, ...
FI_HD void fill_table(SharedTable& table, int thread, int threads) {
  for (int i = thread; i < kTablePairs * kNormalTableRows * 2; i += threads) {
    const int pair = i / (kNormalTableRows * 2), row = i / 2 % kNormalTableRows, k = 2 * pair + i % 2;
    table.pairs[pair][row][i % 2] =
        k < kNormalTableColumns ? normal_coefficient(k, static_cast<uint32_t>(row)) : 0.0f;
  }
}

struct RowTable {
  const SharedTable* table;
  FI_HD_MEMBER void row(uint32_t r, float c[kNormalTableColumns]) const {
#pragma unroll
    for (int pair = 0; pair < kTablePairs; ++pair) {
#if defined(__CUDA_ARCH__)
      const float2 v = *reinterpret_cast<const float2*>(table->pairs[pair][r]);
      c[2 * pair] = v.x;
      if (2 * pair + 1 < kNormalTableColumns) c[2 * pair + 1] = v.y;
#else
      c[2 * pair] = table->pairs[pair][r][0];
      if (2 * pair + 1 < kNormalTableColumns) c[2 * pair + 1] = table->pairs[pair][r][1];
#endif
    }
  }
};

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

// ---- values ------------------------------------------------------------------------------
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
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      if constexpr (K == kNormal) {
        v[l] = normal_value(w.v[l], d.p[0], d.p[1], rows);
      } else if constexpr (K == kUniform) {
        v[l] = uniform_value(w.v[l], d.p[0], d.p[1]);
      } else {
        v[l] = trunc_normal_value(w.v[l], d.p[0], d.p[1], d.p[2], d.p[3], d.p[4], d.p[5], rows);
      }
    }
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
// unit (written element-wise); chunks without either run the loop without those tests.
// The loop counts in 32 bits inside the chunk (at most kChunk elements) and advances the
// Philox group and the address by a constant step: no division or 64-bit compare per unit.
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
  char* dst = d.data + (begin + static_cast<int64_t>(thread) * kUnit) * kSize;
#pragma unroll 2
  for (int i = thread * kUnit; i < n;
       i += step, group += step / 4, dst += static_cast<int64_t>(step) * kSize) {
    float v[kUnit];
    const int64_t first = begin + i;
    const int64_t g = kRuns ? placed_index(d.offset, d.run, d.run_stride, first) / 4 : group;
#pragma unroll
    for (int h = 0; h < kUnit / 4; ++h) group_values<K>(d, keys, g + h, rows, v + 4 * h);
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
  const bool checks = (begin < d.pad_end && end > d.pad_begin) || (end - begin) % kUnit != 0;
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

// The tensor that owns `chunk`: the last one whose first chunk is <= chunk (all non-empty).
// A block walks its chunks in increasing order, so the search starts at the previous owner.
template <class Args>
FI_HD int64_t tensor_of_chunk(const Args& a, int64_t chunk, int64_t lo) {
  int64_t hi = a.num_tensors - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (a.descs[mid].first_chunk <= chunk) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Block `block` of `grid` walks the chunks block, block + grid, ...; inside a chunk its
// threads split the elements. Every element is written by exactly one thread. `Args` has
// keys, num_tensors, total_chunks and descs (LaunchArgs<N> on the device, HostLaunchArgs in
// the emulation).
template <class Args, class Rows>
FI_HD void thread_body(const Args& a, const Rows& rows, int64_t block, int64_t grid,
                       int thread, int block_dim) {
  int64_t owner = 0;
  for (int64_t chunk = block; chunk < a.total_chunks; chunk += grid) {
    owner = tensor_of_chunk(a, chunk, owner);
    // A copy: the stores below could alias the descriptors as far as the compiler knows, and
    // a reference would make it reload every field in every iteration.
    const TensorDesc d = a.descs[owner];
    const int64_t begin = (chunk - d.first_chunk) * kChunk;
    const int64_t end = begin + kChunk < d.numel ? begin + kChunk : d.numel;
#if defined(FUSEDINIT_SASS_PROBE_KIND)
    // benchmarks/sass_report.py builds one (distribution, dtype) loop alone to count its SASS.
    run_vector<FUSEDINIT_SASS_PROBE_KIND, static_cast<Store>(FUSEDINIT_SASS_PROBE_STORE)>(
        d, a.keys, rows, begin, end, thread, block_dim);
    continue;
#endif
    switch (d.kind) {
      case kNormal: run_kind<kNormal>(d, a.keys, rows, begin, end, thread, block_dim); break;
      case kUniform: run_kind<kUniform>(d, a.keys, rows, begin, end, thread, block_dim); break;
      case kTruncNormal:
        run_kind<kTruncNormal>(d, a.keys, rows, begin, end, thread, block_dim);
        break;
      default: run_kind<kConstant>(d, a.keys, rows, begin, end, thread, block_dim); break;
    }
  }
}

}  // namespace gpu
}  // namespace fusedinit
