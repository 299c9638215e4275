// One tensor of a fusedinit::init_ call decoded from the op's columns (tensor, kind, params,
// stream, padding row, placement): what the CPU op (cpu/init_cpu.cpp) and the CUDA launch
// plan (cuda/launch_plan.cpp) both need before they write it, decoded in one place so the
// backends cannot read the columns differently.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/OptionalArrayRef.h>

#include <cstdint>

#include "cuda/launch_layout.h"
#include "fusedinit/rng_math.h"

namespace fusedinit {

// The destination format of a dtype (one of float32, float64, bfloat16, float16); raises a
// TypeError naming tensors[i] for any other dtype.
gpu::Store store_of(const at::Tensor& t, int64_t i);

struct TensorTarget {
  char* data;
  int64_t numel;
  gpu::Store store;
  bool contiguous;
  int64_t kind;
  float p[kParamsPerTensor];  // the parameters rounded to float32, as the contract computes
  uint64_t stream;            // the int64 column's bits
  int64_t pad_begin, pad_end;       // logical index range of the padding row (empty: none)
  int64_t offset, run, run_stride;  // placement in a larger logical tensor (index_map)
};

// tensors[i] and its entries of the other columns. The arguments must have passed
// check_init_args (op_args.h); the dtype is checked here, even for an empty tensor (whose
// data pointer is then left null: there is nothing to write).
TensorTarget decode_tensor(at::TensorList tensors, int64_t i, at::IntArrayRef kinds,
                           at::ArrayRef<double> params, at::IntArrayRef streams,
                           at::IntArrayRef padding_rows, at::OptionalIntArrayRef index_map);

}  // namespace fusedinit
