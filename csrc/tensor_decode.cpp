#include "tensor_decode.h"

#include <c10/util/Exception.h>

namespace fusedinit {

gpu::Store store_of(const at::Tensor& t, int64_t i) {
  switch (t.scalar_type()) {
    case at::kFloat: return gpu::Store::kFloat32;
    case at::kDouble: return gpu::Store::kFloat64;
    case at::kBFloat16: return gpu::Store::kBFloat16;
    case at::kHalf: return gpu::Store::kFloat16;
    default:
      TORCH_CHECK_TYPE(false, "fusedinit.init_: tensors[", i, "] has unsupported dtype ",
                       t.scalar_type(), " (float32, float64, bfloat16, float16)");
  }
}

TensorTarget decode_tensor(at::TensorList tensors, int64_t i, at::IntArrayRef kinds,
                           at::ArrayRef<double> params, at::IntArrayRef streams,
                           at::IntArrayRef padding_rows, at::OptionalIntArrayRef index_map) {
  const at::Tensor& t = tensors[i];
  TensorTarget d{};
  d.store = store_of(t, i);
  d.numel = t.numel();
  if (d.numel == 0) return d;
  d.data = static_cast<char*>(t.data_ptr());
  d.contiguous = t.is_contiguous();
  d.kind = kinds[i];
  for (int k = 0; k < kParamsPerTensor; ++k) {
    d.p[k] = static_cast<float>(params[i * kParamsPerTensor + k]);
  }
  d.stream = static_cast<uint64_t>(streams[i]);
  if (padding_rows[i] >= 0) {
    const int64_t row = d.numel / t.size(0);
    d.pad_begin = padding_rows[i] * row;
    d.pad_end = d.pad_begin + row;
  }
  if (index_map.has_value()) {
    d.offset = (*index_map)[3 * i];
    d.run = (*index_map)[3 * i + 1];
    d.run_stride = (*index_map)[3 * i + 2];
  }
  return d;
}

}  // namespace fusedinit
