// The op schemas of fusedinit, defined once; each backend registers its kernels with
// TORCH_LIBRARY_IMPL in its own file.
#include <Python.h>
#include <torch/library.h>

#include "cpu/block_kernels.h"

extern "C" {
// `import fusedinit._C` loads this library (and so runs the registrations below).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace fusedinit {
namespace {
std::string cpu_isa() { return cpu::active_kernels().name; }
std::string set_cpu_isa(const std::string& name) { return cpu::set_isa(name.c_str()); }
}  // namespace

TORCH_LIBRARY(fusedinit, m) {
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

}  // namespace fusedinit
