// What one launch of the CUDA init kernel reads: the descriptors of its tensors and a few
// scalars, all passed by value as the kernel's parameter block (no device buffer, no host
// copy: a launch is one graph node under CUDA graph capture). Plain data only, so the host
// emulation of the kernel (emulate.cpp) and the device build share it byte for byte.
#pragma once

#include <cstdint>

#include "fusedinit/rng_math.h"

namespace fusedinit {
namespace gpu {

constexpr int kMaxDims = 8;            // strided destinations, after merging dims
constexpr int kBlockThreads = 256;     // compile-time block size: the kernel never reads blockDim
constexpr int kMinBlocksPerSM = 4;     // __launch_bounds__: at most 64 registers a thread
constexpr int64_t kChunk = 32768;      // elements of one tensor per block iteration: 128 a thread

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

// The scalars of a launch; `Descs` is how the thread body reaches the descriptors (a pointer
// in the host emulation, an array in the kernel's parameter block on the device).
struct LaunchScalars {
  RoundKeys keys;  // Philox round keys of the seed: kernel parameters, read as operands
  int64_t num_tensors;
  int64_t total_chunks;
};

// The kernel's parameter block for up to N tensors. CUDA 12.1+ allows 32764 bytes of kernel
// parameters on sm_70+: the largest capacity must fit (static_assert in init_kernel.cu).
template <int N>
struct LaunchArgs : LaunchScalars {
  TensorDesc descs[N];
};

// The capacities the kernel is built for (smallest that fits is launched); a call with more
// tensors than the largest is split into launches of at most that many.
constexpr int kDescCapacities[] = {1, 16, 128};
constexpr int kMaxDescsPerLaunch = 128;

// The host emulation's view of the same data: descriptors in an ordinary array.
struct HostLaunchArgs : LaunchScalars {
  const TensorDesc* descs;
};

}  // namespace gpu
}  // namespace fusedinit
