// The entry points of the init kernel (init_kernel.cuh, instantiated in init_kernel_<N>.cu),
// declared without any torch header. Declarations only: nothing here may name a capacity's
// instantiation, or every init_kernel_<N>.cu that includes it would compile that capacity's
// kernel too (a run-time switch over the capacities lives in init_cuda.cpp, a host file).
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

}  // namespace gpu
}  // namespace fusedinit
