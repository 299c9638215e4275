// The CUDA init kernel: a thin __global__ around thread_body.h. Only c10/cuda and plain CUDA
// headers here (no torch/extension.h, no ATen/cuda), which keeps nvcc's work small.
#include <cuda_runtime.h>

#include "init_launch.h"
#include "thread_body.h"

namespace fusedinit {
namespace gpu {

__global__ void __launch_bounds__(kBlockThreads) init_kernel(LaunchArgs args) {
  __shared__ __align__(16) float rows[kNormalTableRows * kTableStride];
  for (int i = threadIdx.x; i < kNormalTableRows * kTableStride; i += blockDim.x) {
    rows[i] = table_entry(i);
  }
  __syncthreads();
  thread_body(args, RowTable{rows}, blockIdx.x, gridDim.x, threadIdx.x, blockDim.x);
}

void launch_init(const LaunchArgs& args, int64_t grid, cudaStream_t stream) {
  init_kernel<<<static_cast<unsigned>(grid), kBlockThreads, 0, stream>>>(args);
}

}  // namespace gpu
}  // namespace fusedinit
