// Argument checks every backend of fusedinit::init_ shares (the Python layer checks values;
// these guard the op against direct calls with inconsistent lists).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/OptionalArrayRef.h>

#include "fusedinit/rng_math.h"

namespace fusedinit {

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
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(kinds[i] >= kNormal && kinds[i] <= kConstant, "fusedinit.init_: kinds[", i,
                "] = ", kinds[i], " is not a distribution code");
    if (padding_rows[i] >= 0) {
      TORCH_CHECK_INDEX(tensors[i].dim() > 0 && padding_rows[i] < tensors[i].size(0),
                        "fusedinit.init_: padding row ", padding_rows[i], " out of range for tensors[",
                        i, "]");
    }
  }
}

}  // namespace fusedinit
