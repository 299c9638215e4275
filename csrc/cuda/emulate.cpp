// The CUDA kernel's thread body run on the host over an emulated grid: every (block, thread)
// pair of the launch in turn. Registered for CPU tensors as fusedinit_testing::emulate_cuda_init_ so
// tests compare the CUDA code path with the reference bit for bit without a GPU.
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "launch_plan.h"
#include "thread_body.h"

namespace fusedinit {
namespace gpu {
namespace {

void emulate_cuda_init_(at::TensorList tensors, at::IntArrayRef kinds, at::ArrayRef<double> params,
                        at::IntArrayRef streams, at::IntArrayRef padding_rows, int64_t seed,
                        int64_t grid, int64_t block_dim, at::OptionalIntArrayRef index_map) {
  TORCH_CHECK(grid >= 1 && block_dim >= 1, "fusedinit.emulate_cuda_init_: grid and block must be >= 1");
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].device().is_cpu(), "fusedinit.emulate_cuda_init_: tensors[", i,
                "] must be a CPU tensor");
  }
  const LaunchPlan plan = make_launch_plan(tensors, kinds, params, streams, padding_rows, index_map);
  if (plan.descs.empty()) return;
  float table[kNormalTableRows * kTableStride];  // the block's shared memory
  for (int i = 0; i < kNormalTableRows * kTableStride; ++i) table[i] = table_entry(i);
  const LaunchArgs args{plan.descs.data(), static_cast<int64_t>(plan.descs.size()),
                        plan.total_chunks, seed_keys(seed)};
  for (int64_t b = 0; b < grid; ++b) {
    for (int64_t t = 0; t < block_dim; ++t) {
      thread_body(args, RowTable{table}, b, grid, static_cast<int>(t), static_cast<int>(block_dim));
    }
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedinit_testing, CPU, m) {
  m.impl("emulate_cuda_init_", &emulate_cuda_init_);
}

}  // namespace gpu
}  // namespace fusedinit
