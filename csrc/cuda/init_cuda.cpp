// CUDA implementation of fusedinit::init_: one kernel launch per kMaxDescsPerLaunch tensors
// (one launch for most calls), the descriptors passed by value in the kernel's parameters.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "init_launch.h"
#include "launch_plan.h"

namespace fusedinit {
namespace gpu {
namespace {

constexpr int kMaxDevices = 64;
constexpr int kCapacityCount = sizeof(kDescCapacities) / sizeof(kDescCapacities[0]);

// The kernel for a capacity known at run time. This switch names every capacity's
// instantiation, so it must stay out of the headers that the init_kernel_<N>.cu files include.
static_assert(kCapacityCount == 3 && kDescCapacities[0] == 1 && kDescCapacities[1] == 16 &&
                  kDescCapacities[2] == 128,
              "one init_kernel_<N>.cu and one case below per capacity");

void launch_init(const LaunchScalars& scalars, const TensorDesc* descs, int64_t n, int capacity,
                 int64_t grid, cudaStream_t stream) {
  switch (capacity) {
    case 1: return launch_init_n<1>(scalars, descs, n, grid, stream);
    case 16: return launch_init_n<16>(scalars, descs, n, grid, stream);
    default: return launch_init_n<128>(scalars, descs, n, grid, stream);
  }
}

cudaError_t blocks_per_multiprocessor(int capacity, int* blocks) {
  switch (capacity) {
    case 1: return blocks_per_multiprocessor_n<1>(blocks);
    case 16: return blocks_per_multiprocessor_n<16>(blocks);
    default: return blocks_per_multiprocessor_n<128>(blocks);
  }
}

int capacity_slot(int capacity) {
  for (int i = 0; i < kCapacityCount; ++i) {
    if (kDescCapacities[i] == capacity) return i;
  }
  return kCapacityCount - 1;
}

// Resident blocks per SM of the kernel built for `capacity` on `device` (the current device):
// 64 registers and the stack of the full kernel allow 4 blocks of 256 threads on sm_90, not the
// 8 that 2048 threads per SM would suggest. The first call on a device asks for every capacity
// at once: the occupancy query loads the kernel's module lazily, and a capacity first needed
// later, inside CUDA graph capture, would load its module there. A GPU the kernels were not
// built for (older than sm_80) gets a clear error instead of "no kernel image".
int64_t blocks_per_sm(const c10::Device& device, int capacity) {
  static std::array<std::array<std::atomic<int>, kCapacityCount>, kMaxDevices> cache{};
  const int index = device.index();
  if (index < kMaxDevices) {
    const int cached = cache[index][capacity_slot(capacity)].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int wanted = 0;
  for (int slot = 0; slot < kCapacityCount; ++slot) {
    int blocks = 0;
    const cudaError_t err = blocks_per_multiprocessor(kDescCapacities[slot], &blocks);
    if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
      (void)cudaGetLastError();
      int major = 0, minor = 0;
      (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index);
      (void)cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index);
      TORCH_CHECK(false, "fusedinit: the CUDA kernels of this build do not run on ", device,
                  " (compute capability ", major, ".", minor, "; built for 8.0 and newer); use "
                  "backend='triton' or backend='reference'");
    }
    C10_CUDA_CHECK(err);
    blocks = std::max(blocks, 1);
    if (index < kMaxDevices) cache[index][slot].store(blocks, std::memory_order_relaxed);
    if (kDescCapacities[slot] == capacity) wanted = blocks;
  }
  return wanted;
}

void init_cuda_(at::TensorList tensors, at::IntArrayRef kinds, at::ArrayRef<double> params,
                at::IntArrayRef streams, at::IntArrayRef padding_rows, int64_t seed,
                at::OptionalIntArrayRef index_map) {
  if (tensors.empty()) return;
  const c10::Device device = tensors[0].device();
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].device() == device, "fusedinit.init_: tensors[", i, "] is on ",
                tensors[i].device(), " but tensors[0] is on ", device,
                " (one call per device)");
  }
  const LaunchPlan plan = make_launch_plan(tensors, kinds, params, streams, padding_rows, index_map);
  if (plan.descs.empty()) return;
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  int multiprocessors = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount,
                                        device.index()));
  // The descriptors travel by value in the kernel's parameter block: nothing is copied to
  // the device beforehand, so under CUDA graph capture a launch is one kernel node whose
  // parameters (pointers, seed, streams) are frozen at capture time.
  LaunchScalars scalars;
  scalars.keys = seed_keys(seed);
  for (const LaunchBatch& batch : split_launches(plan)) {
    const int64_t n = static_cast<int64_t>(batch.descs.size());
    const int capacity = descriptor_capacity(n);
    scalars.num_tensors = n;
    scalars.total_chunks = batch.total_chunks;
    const int64_t grid = grid_size(batch.total_chunks, multiprocessors,
                                   blocks_per_sm(device, capacity));
    launch_init(scalars, batch.descs.data(), n, capacity, grid, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedinit, CUDA, m) {
  m.impl("init_", &init_cuda_);
}

}  // namespace gpu
}  // namespace fusedinit
