// The CUDA init kernel: a thin __global__ around thread_body.h, templated on how many tensor
// descriptors its parameter block holds. Each init_kernel_<N>.cu instantiates one capacity
// (they compile in parallel). Only plain CUDA headers here (no torch), which keeps nvcc's
// work small.
#pragma once

#include <cuda_runtime.h>

#include <cstring>

#include "init_launch.h"
#include "thread_body.h"

// The 128-descriptor parameter block is 30,816 bytes: kernel parameters above 4 KB need a
// CUDA 12.1 runtime (and a Volta or newer GPU; the kernels are built for sm_80 and newer).
#if !defined(CUDART_VERSION) || CUDART_VERSION < 12010
#error "fusedinit's CUDA kernels need CUDA 12.1 or newer (kernel parameter blocks over 4 KB)"
#endif

namespace fusedinit {
namespace gpu {

static_assert(sizeof(LaunchArgs<kMaxDescsPerLaunch>) <= 32764,
              "the largest descriptor block must fit CUDA's kernel parameter limit");

// __grid_constant__: the descriptors are read in place from the parameter block (constant
// bank) even when indexed at run time, instead of being copied to each thread's stack.
// RunChunk: RunByKind (every distribution) in the library; benchmarks/sass_probe.cu
// instantiates it with one distribution and dtype alone.
template <int N, class RunChunk = RunByKind>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSM)
    init_kernel(const __grid_constant__ LaunchArgs<N> args) {
  __shared__ SharedTable table;
  fill_table(table, threadIdx.x, kBlockThreads);
  __syncthreads();
  // kBlockThreads, not blockDim.x: the loop strides are compile-time constants.
  thread_body(args, RowTable{&table}, blockIdx.x, gridDim.x, threadIdx.x, kBlockThreads,
              RunChunk());
}

template <int N>
void launch_init_n(const LaunchScalars& scalars, const TensorDesc* descs, int64_t n,
                   int64_t grid, cudaStream_t stream) {
  LaunchArgs<N> args{};  // the unused descriptors are zeros: never read (n <= N)
  static_cast<LaunchScalars&>(args) = scalars;
  std::memcpy(args.descs, descs, static_cast<size_t>(n) * sizeof(TensorDesc));
  // The launch copies the parameter block: `args` may go out of scope right after.
  init_kernel<N><<<static_cast<unsigned>(grid), kBlockThreads, 0, stream>>>(args);
}

template <int N>
cudaError_t blocks_per_multiprocessor_n(int* blocks) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, init_kernel<N>, kBlockThreads, 0);
}

}  // namespace gpu
}  // namespace fusedinit

// One capacity per translation unit: init_kernel_<N>.cu.
#define FUSEDINIT_INSTANTIATE_INIT_KERNEL(N)                                                   \
  namespace fusedinit {                                                                        \
  namespace gpu {                                                                              \
  template void launch_init_n<N>(const LaunchScalars&, const TensorDesc*, int64_t, int64_t,    \
                                 cudaStream_t);                                                \
  template cudaError_t blocks_per_multiprocessor_n<N>(int*);                                   \
  }                                                                                            \
  }
