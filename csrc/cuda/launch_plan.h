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

// Blocks for a launch: enough to fill the device, never more than there are chunks.
int64_t grid_size(int64_t total_chunks, int64_t multiprocessors);

}  // namespace gpu
}  // namespace fusedinit
