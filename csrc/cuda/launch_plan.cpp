#include "launch_plan.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

#include "../op_args.h"

namespace fusedinit {
namespace gpu {
namespace {

Store store_of(const at::Tensor& t, int64_t i) {
  switch (t.scalar_type()) {
    case at::kFloat: return Store::kFloat32;
    case at::kDouble: return Store::kFloat64;
    case at::kBFloat16: return Store::kBFloat16;
    case at::kHalf: return Store::kFloat16;
    default:
      TORCH_CHECK_TYPE(false, "fusedinit.init_: tensors[", i, "] has unsupported dtype ",
                       t.scalar_type(), " (float32, float64, bfloat16, float16)");
  }
}

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
    TensorDesc d{};
    d.store = store_of(t, ii);
    if (t.numel() == 0) continue;
    d.data = static_cast<char*>(t.data_ptr());
    d.numel = t.numel();
    d.first_chunk = plan.total_chunks;
    d.kind = static_cast<int32_t>(kinds[i]);
    d.stream = static_cast<uint64_t>(streams[i]);
    for (int k = 0; k < kParamsPerTensor; ++k) {
      d.p[k] = static_cast<float>(params[i * kParamsPerTensor + k]);
    }
    if (padding_rows[i] >= 0) {
      const int64_t row = t.numel() / t.size(0);
      d.pad_begin = padding_rows[i] * row;
      d.pad_end = d.pad_begin + row;
    }
    if (index_map.has_value()) {
      d.offset = (*index_map)[3 * i];
      d.run = (*index_map)[3 * i + 1];
      d.run_stride = (*index_map)[3 * i + 2];
    }
    // Vector units must start on Philox groups and never cross a run: 8 covers every unit.
    d.vector = t.is_contiguous() && reinterpret_cast<uintptr_t>(d.data) % 16 == 0 &&
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
