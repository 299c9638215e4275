// The entry points of the init kernel (init_kernel.cuh, instantiated in init_kernel_<N>.cu),
// declared without any torch header.
#pragma once

#include <cuda_runtime_api.h>

#include "launch_layout.h"

namespace fusedinit {
namespace gpu {

// Launches the init kernel built for N descriptors (one of kDescCapacities, N >= n) with
// `scalars` and descs[0 .. n) as its parameters, `grid` blocks on `stream`. The caller checks
// errors.
template <int N>
void launch_init_n(const LaunchScalars& scalars, const TensorDesc* descs, int64_t n,
                   int64_t grid, cudaStream_t stream);

// Resident blocks per SM of that kernel on the current device
// (cudaOccupancyMaxActiveBlocksPerMultiprocessor), or the CUDA error that prevents running it
// (cudaErrorNoKernelImageForDevice on a GPU older than the architectures built).
template <int N>
cudaError_t blocks_per_multiprocessor_n(int* blocks);

// The same, for a capacity known at run time.
inline void launch_init(const LaunchScalars& scalars, const TensorDesc* descs, int64_t n,
                        int capacity, int64_t grid, cudaStream_t stream) {
  static_assert(sizeof(kDescCapacities) / sizeof(int) == 3 && kDescCapacities[0] == 1 &&
                    kDescCapacities[1] == 16 && kDescCapacities[2] == 128,
                "one init_kernel_<N>.cu and one case below per capacity");
  switch (capacity) {
    case 1: return launch_init_n<1>(scalars, descs, n, grid, stream);
    case 16: return launch_init_n<16>(scalars, descs, n, grid, stream);
    default: return launch_init_n<128>(scalars, descs, n, grid, stream);
  }
}

inline cudaError_t blocks_per_multiprocessor(int capacity, int* blocks) {
  switch (capacity) {
    case 1: return blocks_per_multiprocessor_n<1>(blocks);
    case 16: return blocks_per_multiprocessor_n<16>(blocks);
    default: return blocks_per_multiprocessor_n<128>(blocks);
  }
}

}  // namespace gpu
}  // namespace fusedinit
