#include "launch_plan.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

#include "../op_args.h"
#include "../tensor_decode.h"

namespace fusedinit {
namespace gpu {
namespace {

// Row-major logical order -> memory: drop size-1 dims and merge dims that are contiguous
// with each other, so most strided views need only one or two.
void describe_strides(const at::Tensor& t, int64_t i, TensorDesc& d) {
  std::vector<int64_t> sizes, strides;
  for (int64_t k = 0; k < t.dim(); ++k) {
    if (t.size(k) == 1) continue;
    if (!sizes.empty() && strides.back() == t.size(k) * t.stride(k)) {
      sizes.back() *= t.size(k);
      strides.back() = t.stride(k);
    } else {
      sizes.push_back(t.size(k));
      strides.push_back(t.stride(k));
    }
  }
  if (sizes.empty()) sizes = {1}, strides = {1};
  TORCH_CHECK(static_cast<int>(sizes.size()) <= kMaxDims, "fusedinit.init_: tensors[", i,
              "] needs ", sizes.size(), " strided dimensions; the CUDA kernel addresses at most ",
              kMaxDims, " (make it contiguous first)");
  d.ndim = static_cast<int32_t>(sizes.size());
  std::copy(sizes.begin(), sizes.end(), d.sizes);
  std::copy(strides.begin(), strides.end(), d.strides);
}

}  // namespace

LaunchPlan make_launch_plan(at::TensorList tensors, at::IntArrayRef kinds,
                            at::ArrayRef<double> params, at::IntArrayRef streams,
                            at::IntArrayRef padding_rows, at::OptionalIntArrayRef index_map) {
  check_init_args(tensors, kinds, params, streams, padding_rows, index_map);
  LaunchPlan plan;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const int64_t ii = static_cast<int64_t>(i);
    const TensorTarget tg =
        decode_tensor(tensors, ii, kinds, params, streams, padding_rows, index_map);
    if (tg.numel == 0) continue;
    TensorDesc d{};
    d.data = tg.data;
    d.numel = tg.numel;
    d.first_chunk = plan.total_chunks;
    d.pad_begin = tg.pad_begin;
    d.pad_end = tg.pad_end;
    d.stream = tg.stream;
    d.offset = tg.offset;
    d.run = tg.run;
    d.run_stride = tg.run_stride;
    std::copy(tg.p, tg.p + kParamsPerTensor, d.p);
    d.kind = static_cast<int32_t>(tg.kind);
    d.store = tg.store;
    // Vector units must start on Philox groups and never cross a run: 8 covers every unit.
    d.vector = tg.contiguous && reinterpret_cast<uintptr_t>(d.data) % 16 == 0 &&
               d.offset % 8 == 0 && d.run % 8 == 0 && d.run_stride % 8 == 0;
    describe_strides(t, ii, d);
    plan.total_chunks += (d.numel + kChunk - 1) / kChunk;
    plan.descs.push_back(d);
  }
  return plan;
}

std::vector<LaunchBatch> split_launches(const LaunchPlan& plan, int64_t max_per_launch) {
  std::vector<LaunchBatch> batches;
  for (size_t i = 0; i < plan.descs.size(); i += static_cast<size_t>(max_per_launch)) {
    LaunchBatch batch;
    const size_t end = std::min(plan.descs.size(), i + static_cast<size_t>(max_per_launch));
    batch.descs.assign(plan.descs.begin() + i, plan.descs.begin() + end);
    const int64_t base = batch.descs.front().first_chunk;
    for (TensorDesc& d : batch.descs) d.first_chunk -= base;
    const int64_t next = end < plan.descs.size() ? plan.descs[end].first_chunk : plan.total_chunks;
    batch.total_chunks = next - base;
    // The kernel walks chunks in 32 bits (thread_body.h): 2^31 chunks are 2^46 elements.
    TORCH_CHECK(batch.total_chunks < (int64_t{1} << 31), "fusedinit: ", batch.total_chunks,
                " chunks of ", kChunk, " elements in one launch (at most 2^31 - 1)");
    batches.push_back(std::move(batch));
  }
  return batches;
}

int descriptor_capacity(int64_t n) {
  for (int capacity : kDescCapacities) {
    if (n <= capacity) return capacity;
  }
  TORCH_CHECK(false, "fusedinit: ", n, " descriptors in one launch (at most ", kMaxDescsPerLaunch,
              ")");
}

int64_t grid_size(int64_t total_chunks, int64_t multiprocessors, int64_t blocks_per_sm) {
  return std::max<int64_t>(1, std::min<int64_t>(total_chunks,
                                                multiprocessors * std::max<int64_t>(1, blocks_per_sm)));
}

}  // namespace gpu
}  // namespace fusedinit
