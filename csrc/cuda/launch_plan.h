// Host side of a CUDA init launch, shared by the real launcher (init_cuda.cpp) and the host
// emulation (emulate.cpp): the op's arguments -> the descriptor table the threads read.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/OptionalArrayRef.h>

#include <vector>

#include "launch_layout.h"

namespace fusedinit {
namespace gpu {

struct LaunchPlan {
  std::vector<TensorDesc> descs;  // non-empty tensors only, in call order
  int64_t total_chunks = 0;
};

// Checks the arguments (op_args.h) and describes each non-empty tensor. Raises for a layout
// the kernel cannot address (more than kMaxDims dims that do not merge).
LaunchPlan make_launch_plan(at::TensorList tensors, at::IntArrayRef kinds,
                            at::ArrayRef<double> params, at::IntArrayRef streams,
                            at::IntArrayRef padding_rows, at::OptionalIntArrayRef index_map);

// The seed's Philox round keys (the seed's int64 bits as uint64).
inline RoundKeys seed_keys(int64_t seed) {
  const uint64_t s = static_cast<uint64_t>(seed);
  return philox_round_keys(static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32));
}

// The launches of a plan: consecutive runs of at most `max_per_launch` descriptors, each with
// its first_chunk counted from the run's own first chunk.
struct LaunchBatch {
  std::vector<TensorDesc> descs;
  int64_t total_chunks = 0;
};
std::vector<LaunchBatch> split_launches(const LaunchPlan& plan,
                                        int64_t max_per_launch = kMaxDescsPerLaunch);

// The smallest of kDescCapacities that holds n descriptors (n <= kMaxDescsPerLaunch).
int descriptor_capacity(int64_t n);

// Blocks for a launch: every block the device holds at once (blocks_per_sm from the kernel's
// occupancy), never more than there are chunks.
int64_t grid_size(int64_t total_chunks, int64_t multiprocessors, int64_t blocks_per_sm);

}  // namespace gpu
}  // namespace fusedinit
