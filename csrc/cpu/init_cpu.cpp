// CPU implementations of the fusedinit ops: one parallel pass over every tensor of a call,
// split into chunks that any thread may take, so many small tensors cost one parallel region.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/SmallVector.h>
#include <c10/util/irange.h>
#include <c10/util/OptionalArrayRef.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../op_args.h"
#include "../tensor_decode.h"
#include "block_kernels.h"

namespace fusedinit {
namespace cpu {
namespace {

constexpr int64_t kWorkItemElements = 1 << 16;  // per work item (a multiple of 4)
constexpr int64_t kStrided = 1024;    // buffer for strided destinations

// The CPU kernels number their formats as the decoded store (tensor_decode.h) does.
static_assert(static_cast<int>(DType::kFloat32) == static_cast<int>(gpu::Store::kFloat32) &&
                  static_cast<int>(DType::kFloat64) == static_cast<int>(gpu::Store::kFloat64) &&
                  static_cast<int>(DType::kBFloat16) == static_cast<int>(gpu::Store::kBFloat16) &&
                  static_cast<int>(DType::kFloat16) == static_cast<int>(gpu::Store::kFloat16),
              "cpu::DType and gpu::Store must agree");

// A decoded tensor (tensor_decode.h) and what the CPU kernels read of it.
struct Target : TensorTarget {
  Job job;
  DType dtype;
  c10::SmallVector<int64_t, 6> sizes, strides;  // strided destinations only (no heap use)
};

// End of the run of consecutive logical indices that element i starts in, capped at `end`.
int64_t run_end(const Target& t, int64_t i, int64_t end) {
  return t.run == 0 ? end : std::min(end, (i / t.run + 1) * t.run);
}

uint64_t logical(const Target& t, int64_t i) {
  return static_cast<uint64_t>(placed_index(t.offset, t.run, t.run_stride, i));
}

struct WorkItem {
  int64_t target;
  int64_t begin, end;
};

// Strided store of values for logical indices [first, first + n).
void store_strided(const Target& t, const Job& job, const float* values, int64_t first, int64_t n) {
  const int64_t dims = static_cast<int64_t>(t.sizes.size());
  c10::SmallVector<int64_t, 8> idx(dims);  // no heap allocation for tensors up to 8-D
  int64_t rem = first, offset = 0;
  for (int64_t d = dims - 1; d >= 0; --d) {
    idx[d] = rem % t.sizes[d];
    rem /= t.sizes[d];
    offset += idx[d] * t.strides[d];
  }
  const int64_t esize = dtype_size(t.dtype);
  for (int64_t k = 0; k < n; ++k) {
    store_scalar(job, values[k], t.dtype, t.data + offset * esize);
    for (int64_t d = dims - 1; d >= 0; --d) {  // odometer step
      offset += t.strides[d];
      if (++idx[d] < t.sizes[d]) break;
      offset -= idx[d] * t.strides[d];
      idx[d] = 0;
    }
  }
}

void run_range(const BlockKernels& k, uint64_t seed, const Target& t, int64_t begin, int64_t end,
               bool zero) {
  if (begin >= end) return;
  const int64_t esize = dtype_size(t.dtype);
  if (t.contiguous) {
    char* dst = t.data + begin * esize;
    if (zero) {
      std::memset(dst, 0, static_cast<size_t>((end - begin) * esize));
    } else {
      for (int64_t i = begin; i < end;) {  // one fill per run of consecutive logical indices
        const int64_t stop = run_end(t, i, end);
        k.fill(t.job, seed, logical(t, i), stop - i, t.dtype, dst + (i - begin) * esize);
        i = stop;
      }
    }
    return;
  }
  float buf[kStrided];
  Job zeros = t.job;
  zeros.kind = kConstant;  // no uniform bound fix-up on the zeros
  for (int64_t i = begin, n = 0; i < end; i += n) {  // a buffer never spans two runs
    n = std::min(run_end(t, i, end) - i, kStrided);
    if (zero) {
      std::memset(buf, 0, sizeof(float) * static_cast<size_t>(n));
    } else {
      k.values(t.job, seed, logical(t, i), n, buf);
    }
    store_strided(t, zero ? zeros : t.job, buf, i, n);
  }
}

void run_item(const BlockKernels& k, uint64_t seed, const Target& t, int64_t begin, int64_t end) {
  // The padding row is written as zeros; everything else gets exactly its usual values.
  const int64_t pb = std::max(begin, std::min(end, t.pad_begin));
  const int64_t pe = std::max(pb, std::min(end, t.pad_end));
  run_range(k, seed, t, begin, pb, false);
  run_range(k, seed, t, pb, pe, true);
  run_range(k, seed, t, pe, end, false);
}

}  // namespace

void init_cpu(at::TensorList tensors, at::IntArrayRef kinds, at::ArrayRef<double> params,
              at::IntArrayRef streams, at::IntArrayRef padding_rows, int64_t seed,
              at::OptionalIntArrayRef index_map) {
  check_init_args(tensors, kinds, params, streams, padding_rows, index_map);
  std::vector<Target> targets;
  targets.reserve(tensors.size());
  for (const auto i : c10::irange(tensors.size())) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.device().is_cpu(), "fusedinit: tensors[", i, "] is on ", t.device(),
                ", expected cpu");
    Target tg;
    static_cast<TensorTarget&>(tg) =
        decode_tensor(tensors, i, kinds, params, streams, padding_rows, index_map);
    if (tg.numel == 0) continue;
    tg.job.kind = tg.kind;
    std::copy(tg.p, tg.p + kParamsPerTensor, tg.job.p);
    tg.job.stream = tg.stream;
    tg.dtype = static_cast<DType>(tg.store);
    if (!tg.contiguous) {
      tg.sizes.assign(t.sizes().begin(), t.sizes().end());
      tg.strides.assign(t.strides().begin(), t.strides().end());
    }
    targets.push_back(std::move(tg));
  }
  std::vector<WorkItem> work;
  work.reserve(targets.size());  // one item per small tensor: no regrowth for 10^5 of them
  for (const auto ti : c10::irange(targets.size())) {
    for (int64_t b = 0; b < targets[ti].numel; b += kWorkItemElements) {
      work.push_back(WorkItem{static_cast<int64_t>(ti), b,
                              std::min(targets[ti].numel, b + kWorkItemElements)});
    }
  }
  const BlockKernels k = active_kernels();
  const uint64_t useed = static_cast<uint64_t>(seed);
  at::parallel_for(0, static_cast<int64_t>(work.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) {
      run_item(k, useed, targets[work[w].target], work[w].begin, work[w].end);
    }
  });
}

at::Tensor philox_cpu(const at::Tensor& counters, const at::Tensor& keys) {
  TORCH_CHECK(counters.dim() == 2 && counters.size(1) == 4 && counters.scalar_type() == at::kLong,
              "fusedinit.philox4x32_10: counters must be an int64 tensor of shape (N, 4)");
  TORCH_CHECK(keys.dim() == 2 && keys.size(1) == 2 && keys.size(0) == counters.size(0) &&
                  keys.scalar_type() == at::kLong,
              "fusedinit.philox4x32_10: keys must be an int64 tensor of shape (N, 2)");
  const at::Tensor c = counters.contiguous(), kk = keys.contiguous();
  at::Tensor out = at::empty({counters.size(0), 4}, counters.options());
  const int64_t* cp = c.data_ptr<int64_t>();
  const int64_t* kp = kk.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  for (int64_t r = 0; r < counters.size(0); ++r) {
    const Words4 w = philox4x32_10(
        static_cast<uint32_t>(cp[4 * r]), static_cast<uint32_t>(cp[4 * r + 1]),
        static_cast<uint32_t>(cp[4 * r + 2]), static_cast<uint32_t>(cp[4 * r + 3]),
        static_cast<uint32_t>(kp[2 * r]), static_cast<uint32_t>(kp[2 * r + 1]));
    for (int j = 0; j < 4; ++j) op[4 * r + j] = w.v[j];
  }
  return out;
}

at::Tensor transform_words_cpu(const at::Tensor& words, int64_t kind, at::ArrayRef<double> params) {
  TORCH_CHECK(words.scalar_type() == at::kLong, "fusedinit.transform_words: words must be int64");
  TORCH_CHECK(static_cast<int64_t>(params.size()) == kParamsPerTensor,
              "fusedinit.transform_words: expected ", kParamsPerTensor, " params");
  const at::Tensor w = words.contiguous();
  std::vector<uint32_t> u(static_cast<size_t>(w.numel()));
  for (int64_t i = 0; i < w.numel(); ++i) u[i] = static_cast<uint32_t>(w.data_ptr<int64_t>()[i]);
  Job job;
  job.kind = kind;
  for (int p = 0; p < kParamsPerTensor; ++p) job.p[p] = static_cast<float>(params[p]);
  job.stream = 0;
  at::Tensor out = at::empty(words.sizes(), words.options().dtype(at::kFloat));
  active_kernels().transform(job, u.data(), w.numel(), out.data_ptr<float>());
  return out;
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(fusedinit, CPU, m) {
  m.impl("init_", &cpu::init_cpu);
}

TORCH_LIBRARY_IMPL(fusedinit_testing, CPU, m) {
  m.impl("philox4x32_10", &cpu::philox_cpu);
  m.impl("transform_words", &cpu::transform_words_cpu);
}

}  // namespace fusedinit
