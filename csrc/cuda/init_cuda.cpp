// CUDA implementation of fusedinit::init_: one kernel launch for every tensor of the call.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstring>

#include "init_launch.h"
#include "launch_plan.h"

namespace fusedinit {
namespace gpu {
namespace {

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
  LaunchPlan plan = make_launch_plan(tensors, kinds, params, streams, padding_rows, index_map);
  if (plan.descs.empty()) return;
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();

  // The descriptor table goes to the device in one asynchronous copy from pinned memory; the
  // pinned allocator keeps the host block alive until the copy has run.
  const int64_t bytes = static_cast<int64_t>(plan.descs.size() * sizeof(TensorDesc));
  at::Tensor host = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr(), plan.descs.data(), static_cast<size_t>(bytes));
  at::Tensor table = host.to(device, /*non_blocking=*/true);

  int multiprocessors = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount,
                                        device.index()));
  const LaunchArgs args{reinterpret_cast<const TensorDesc*>(table.data_ptr()),
                        static_cast<int64_t>(plan.descs.size()), plan.total_chunks,
                        seed_keys(seed)};
  launch_init(args, grid_size(plan.total_chunks, multiprocessors), stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedinit, CUDA, m) {
  m.impl("init_", &init_cuda_);
}

}  // namespace gpu
}  // namespace fusedinit
