// The op schemas of fusedinit, defined once; each backend registers its kernels with
// TORCH_LIBRARY_IMPL in its own file. Two namespaces: `fusedinit` holds the one user-facing op;
// `fusedinit_testing` holds the hooks tests use (reached through fusedinit.testing).
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <Python.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <vector>

#include "cpu/block_kernels.h"
#include "plain_scan.h"

extern "C" {
// `import fusedinit._C` loads this library (and so runs the registrations below).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1,
                                          fusedinit::module_methods()};
  return PyModule_Create(&module_def);
}
}

namespace fusedinit {
namespace {
std::string cpu_isa() { return cpu::active_kernels().name; }
std::string set_cpu_isa(const std::string& name) { return cpu::set_isa(name.c_str()); }

// Autograd's in-place bookkeeping for the mutating ops (their first argument is the list
// written), as torch's own in-place ops do it: a leaf that requires grad may only be written
// under no_grad (as torch.nn.init does); a non-leaf cannot be written with grad mode on (the
// op has no derivative); every written tensor's version is bumped, so a backward that saved
// one of them fails instead of silently using the new values.
void inplace_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks,
                      torch::jit::Stack* stack) {
  const size_t nargs = op.schema().arguments().size();
  // The list itself (one reference), not a copy of its tensors: a call may hold 10^5 of them.
  const c10::IValue list = (*stack)[stack->size() - nargs];
  const c10::ArrayRef<c10::IValue> written = list.toListRef();
  if (at::GradMode::is_enabled()) {
    for (size_t i = 0; i < written.size(); ++i) {
      const at::Tensor& t = written[i].toTensor();
      if (!t.requires_grad()) continue;
      TORCH_CHECK(!t.is_leaf(), op.schema().name(), ": tensors[", i,
                  "] is a leaf Variable that requires grad and is being used in an in-place "
                  "operation; initialize it under torch.no_grad()");
      TORCH_CHECK(false, op.schema().name(), ": tensors[", i, "] requires grad and this "
                  "in-place op has no derivative; call it under torch.no_grad()");
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const c10::IValue& v : written) {
    const at::Tensor& t = v.toTensor();
    if (!t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
  }
}
}  // namespace

TORCH_LIBRARY(fusedinit, m) {
  // Fake (meta) kernels live in this Python module; torch points users at it if one is missing.
  m.set_python_module("fusedinit.ops.fake");
  // One call initializes every tensor of the list in place: kinds[i] picks the distribution
  // (0 normal, 1 uniform, 2 truncated normal, 3 constant), params[6i:6i+6] its parameters,
  // streams[i] its stream (uint64 bits), padding_rows[i] a row of dim 0 to zero (-1: none).
  // index_map[3i:3i+3] = (offset, run, run_stride) places a tensor that is a shard of a larger
  // logical tensor: its element i (row-major) has logical index
  //   offset + (i / run) * run_stride + i % run      (run = 0: offset + i)
  // i.e. runs of `run` consecutive logical indices, `run_stride` apart. Default: all zero.
  m.def(
      "init_(Tensor(a!)[] tensors, int[] kinds, float[] params, int[] streams, "
      "int[] padding_rows, int seed, int[]? index_map=None) -> ()");
}

TORCH_LIBRARY(fusedinit_testing, m) {
  m.set_python_module("fusedinit.ops.fake");
  // Philox4x32-10 on (N, 4) counters and (N, 2) keys, uint32 values held in int64.
  m.def("philox4x32_10(Tensor counters, Tensor keys) -> Tensor");
  // float32 values (before rounding to a dtype) of the given 32-bit words.
  m.def("transform_words(Tensor words, int kind, float[] params) -> Tensor");
  // The CUDA kernel's thread body run on the host over an emulated grid (CPU tensors): how
  // tests check the CUDA code path without a GPU.
  m.def(
      "emulate_cuda_init_(Tensor(a!)[] tensors, int[] kinds, float[] params, int[] streams, "
      "int[] padding_rows, int seed, int grid, int block, int[]? index_map=None) -> ()");
  m.def("cpu_isa() -> str", &cpu_isa);
  m.def("set_cpu_isa(str name) -> str", &set_cpu_isa);
}

TORCH_LIBRARY_IMPL(fusedinit, Autograd, m) {
  m.impl("init_", torch::CppFunction::makeFromBoxedFunction<&inplace_autograd>());
}

TORCH_LIBRARY_IMPL(fusedinit_testing, Autograd, m) {
  m.impl("emulate_cuda_init_", torch::CppFunction::makeFromBoxedFunction<&inplace_autograd>());
}

}  // namespace fusedinit
