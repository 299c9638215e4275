// What one launch of the CUDA init kernel reads: a table of tensor descriptors (one device
// buffer, copied once per call) and a few scalars. Plain data only, so the host emulation
// of the kernel (emulate.cpp) and the device build share it byte for byte.
#pragma once

#include <cstdint>

#include "fusedinit/rng_math.h"

namespace fusedinit {
namespace gpu {

constexpr int kMaxDims = 8;            // strided destinations, after merging dims
constexpr int kBlockThreads = 256;
constexpr int64_t kChunk = 8192;       // elements of one tensor per block iteration
constexpr int kTableStride = 8;        // shared-memory normal table: 64 rows of 8 floats

enum class Store : int32_t { kFloat32 = 0, kFloat64 = 1, kBFloat16 = 2, kFloat16 = 3 };

struct TensorDesc {
  char* data;
  int64_t numel;
  int64_t first_chunk;          // chunks of all earlier tensors: a chunk never spans two tensors
  int64_t pad_begin, pad_end;   // logical indices of the padding row (empty range: none)
  uint64_t stream;
  int64_t offset, run, run_stride;  // placement in a larger logical tensor (ops.cpp index_map)
  float p[6];                   // distribution parameters, already float32
  int32_t kind;
  Store store;
  int32_t vector;               // 1: contiguous, 16-byte aligned, units inside runs of groups
  int32_t ndim;                 // strided path: logical index -> offset through sizes/strides
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];    // in elements
};

struct LaunchArgs {
  const TensorDesc* descs;
  int64_t num_tensors;
  int64_t total_chunks;
  RoundKeys keys;  // Philox round keys of the seed: kernel parameters, read as operands
};

}  // namespace gpu
}  // namespace fusedinit
