// Argument checks every backend of fusedinit::init_ shares (the Python layer checks values;
// these guard the op against direct calls with inconsistent lists, and are the only checks
// when the Python layer runs under torch.compile).
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <c10/util/OptionalArrayRef.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "fusedinit/rng_math.h"

namespace fusedinit {

// Byte offsets (from the data pointer) of every element, row-major; (size, stride) pairs of
// size 1 are skipped by the caller's merge so small views stay cheap.
inline std::vector<int64_t> element_byte_offsets(const at::Tensor& t) {
  std::vector<int64_t> out{0};
  const int64_t esize = static_cast<int64_t>(t.element_size());
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    const int64_t n = t.size(d), step = t.stride(d) * esize;
    if (n == 1) continue;
    std::vector<int64_t> next;
    next.reserve(out.size() * static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      for (const int64_t o : out) next.push_back(o + i * step);
    }
    out = std::move(next);
  }
  return out;
}

// Exact answer to "do two elements of t share memory?". at::has_internal_overlap answers
// "too hard" for most non-dense views (unfold, as_strided, t[:, ::2]); a "too hard" must not
// count as "no", so such views get the layout test below and, if that is inconclusive, the
// elements' offsets are compared one by one.
inline bool has_internal_overlap_exact(const at::Tensor& t) {
  const at::MemOverlap quick = at::has_internal_overlap(t);
  if (quick != at::MemOverlap::TooHard) return quick == at::MemOverlap::Yes;
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of dims of size > 1
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) > 1) {
      if (t.stride(d) == 0) return true;
      dims.emplace_back(t.stride(d), t.size(d));
    }
  }
  std::sort(dims.begin(), dims.end());
  // Sufficient for "no": each dim steps past everything the smaller-stride dims span.
  int64_t span = 0;
  bool nested = true;
  for (const auto& [stride, size] : dims) {
    if (stride <= span) {
      nested = false;
      break;
    }
    span += stride * (size - 1);
  }
  if (nested) return false;
  std::vector<int64_t> offsets = element_byte_offsets(t);
  std::sort(offsets.begin(), offsets.end());
  return std::adjacent_find(offsets.begin(), offsets.end()) != offsets.end();
}

// The checks below that the bulk scan of init_many_'s common call (plain_scan.cpp) makes too,
// each written once.

// Dense (strided) layout: the only one the kernels address.
inline bool is_strided(const at::Tensor& t) { return t.layout() == at::kStrided; }

// What an in-place torch op refuses too (torch checks it when bumping the version): an
// inference tensor written outside InferenceMode (`inference_mode`: whether it is enabled).
inline bool writable_in_place(const at::Tensor& t, bool inference_mode) {
  return !t.is_inference() || inference_mode;
}

// Refuses a tensor whose elements share memory: the writes would race. (Across the list the
// Python layer compares its items; the pieces it makes of one shard are disjoint views.)
inline void check_no_internal_overlap(at::TensorList tensors, const char* op) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].numel() == 0 || !has_internal_overlap_exact(tensors[i]), op,
                ": tensors[", i, "] has elements that share memory (e.g. an expanded or unfolded "
                "view); in-place initialization would be ill-defined, clone it first");
  }
}

inline void check_init_args(at::TensorList tensors, at::IntArrayRef kinds,
                            at::ArrayRef<double> params, at::IntArrayRef streams,
                            at::IntArrayRef padding_rows,
                            at::OptionalIntArrayRef index_map = c10::nullopt) {
  const int64_t n = static_cast<int64_t>(tensors.size());
  TORCH_CHECK(static_cast<int64_t>(kinds.size()) == n && static_cast<int64_t>(streams.size()) == n &&
                  static_cast<int64_t>(padding_rows.size()) == n &&
                  static_cast<int64_t>(params.size()) == n * kParamsPerTensor,
              "fusedinit.init_: expected one kind, stream and padding row and ", kParamsPerTensor,
              " params per tensor");
  if (index_map.has_value()) {
    TORCH_CHECK(static_cast<int64_t>(index_map->size()) == 3 * n,
                "fusedinit.init_: index_map needs (offset, run, run_stride) per tensor");
    for (int64_t i = 0; i < n; ++i) {
      const int64_t offset = (*index_map)[3 * i], run = (*index_map)[3 * i + 1],
                    stride = (*index_map)[3 * i + 2];
      TORCH_CHECK(offset >= 0 && run >= 0 && (run == 0 || stride >= run),
                  "fusedinit.init_: index_map of tensors[", i, "] = (", offset, ", ", run, ", ",
                  stride, "): need offset >= 0, run >= 0 and run_stride >= run");
    }
  }
  const bool inference_mode = c10::InferenceMode::is_enabled();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_TYPE(is_strided(tensors[i]), "fusedinit.init_: tensors[", i, "] has layout ",
                     tensors[i].layout(), "; only strided (dense) tensors");
    TORCH_CHECK(writable_in_place(tensors[i], inference_mode),
                "fusedinit.init_: tensors[", i, "] is an inference tensor: in-place update to "
                "an inference tensor outside InferenceMode is not allowed (clone it first)");
    TORCH_CHECK(kinds[i] >= kNormal && kinds[i] <= kConstant, "fusedinit.init_: kinds[", i,
                "] = ", kinds[i], " is not a distribution code");
    if (padding_rows[i] >= 0) {
      TORCH_CHECK_INDEX(tensors[i].dim() > 0 && padding_rows[i] < tensors[i].size(0),
                        "fusedinit.init_: padding row ", padding_rows[i], " out of range for tensors[",
                        i, "]");
    }
  }
  check_no_internal_overlap(tensors, "fusedinit.init_");
}

}  // namespace fusedinit
