// Bulk checks for init_many_'s common call (python/fusedinit/ops/api.py, _bulk_columns): one C++
// pass over the tensors instead of a dozen Python passes of attribute lookups, since a model
// of 10^5 tensors pays them on every rank. It only answers "all fine" (with the device type)
// or None; on None the Python layer checks item by item and raises the error naming the item.
#include "plain_scan.h"

#include <ATen/core/Tensor.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "op_args.h"

namespace fusedinit {
namespace {

// The device type ("cpu" or "cuda") if every tensor of `tensors` is strided, not nested,
// contiguous, of one of `dtypes`, on one device, not an inference tensor outside
// InferenceMode, and no two non-empty ones share a byte; else None.
std::optional<c10::DeviceType> scan(PyObject* tensors, PyObject* dtypes) {
  std::vector<at::ScalarType> allowed;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(dtypes); ++i) {
    PyObject* d = PyTuple_GET_ITEM(dtypes, i);
    if (!THPDtype_Check(d)) return std::nullopt;
    allowed.push_back(reinterpret_cast<THPDtype*>(d)->scalar_type);
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(tensors);
  if (n == 0) return std::nullopt;
  const bool inference_mode = c10::InferenceMode::is_enabled();
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;  // [first byte, end) of each tensor
  ranges.reserve(static_cast<size_t>(n));
  std::optional<c10::Device> device;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* obj = PyTuple_GET_ITEM(tensors, i);
    if (!THPVariable_Check(obj)) return std::nullopt;
    const at::Tensor& t = THPVariable_Unpack(obj);
    // Layout and nesting first: is_contiguous assumes a dense tensor.
    if (!is_strided(t) || t.is_nested() || !t.is_contiguous() ||
        !writable_in_place(t, inference_mode) ||
        std::find(allowed.begin(), allowed.end(), t.scalar_type()) == allowed.end()) {
      return std::nullopt;
    }
    if (!device) {
      device = t.device();
      if (!device->is_cpu() && !device->is_cuda()) return std::nullopt;
    } else if (t.device() != *device) {
      return std::nullopt;
    }
    const size_t nbytes = t.nbytes();
    if (nbytes != 0) {
      const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
      ranges.emplace_back(begin, begin + nbytes);
    }
  }
  // Contiguous tensors fill their byte ranges: sorted by start, a shared byte shows as a range
  // starting before its predecessor ends (disjoint neighbours keep the ends increasing).
  std::sort(ranges.begin(), ranges.end());
  for (size_t k = 1; k < ranges.size(); ++k) {
    if (ranges[k].first < ranges[k - 1].second) return std::nullopt;
  }
  return device->type();
}

// scan_plain(tensors: tuple, dtypes: tuple of torch.dtype) -> "cpu" | "cuda" | None
PyObject* scan_plain(PyObject* /*self*/, PyObject* args) {
  PyObject *tensors, *dtypes;
  if (!PyArg_ParseTuple(args, "O!O!:scan_plain", &PyTuple_Type, &tensors, &PyTuple_Type,
                        &dtypes)) {
    return nullptr;
  }
  std::optional<c10::DeviceType> type;
  try {
    type = scan(tensors, dtypes);
  } catch (const std::exception&) {
    // A tensor this scan cannot read (no storage, a functorch wrapper): the general path
    // checks it and reports it.
    type = std::nullopt;
  }
  if (!type) Py_RETURN_NONE;
  return PyUnicode_FromString(*type == c10::DeviceType::CPU ? "cpu" : "cuda");
}

PyMethodDef kMethods[] = {
    {"scan_plain", scan_plain, METH_VARARGS,
     "Device type ('cpu'/'cuda') if every tensor is plain, dense, contiguous, of the given "
     "dtypes, on one device and disjoint from the others; else None."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMethodDef* module_methods() { return kMethods; }

}  // namespace fusedinit
