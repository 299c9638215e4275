// benchmarks/sass_report.py: the init kernel with one (distribution, dtype) loop alone, to
// count that loop's SASS instructions (-DPROBE_KIND=<kind> -DPROBE_STORE=<Store value>). The
// library's kernels (csrc/cuda/init_kernel_<N>.cu) run every distribution by descriptor.
#include "cuda/init_kernel.cuh"

#if !defined(PROBE_KIND) || !defined(PROBE_STORE)
#error "compile with -DPROBE_KIND=<kind> -DPROBE_STORE=<store>"
#endif

namespace fusedinit {
namespace gpu {

struct ProbeRun {
  template <class Rows>
  __device__ void operator()(const TensorDesc& d, const RoundKeys& keys, const Rows& rows,
                             int64_t begin, int64_t end, int thread, int block_dim) const {
    run_vector<PROBE_KIND, static_cast<Store>(PROBE_STORE)>(d, keys, rows, begin, end, thread,
                                                              block_dim);
  }
};

template __global__ void init_kernel<1, ProbeRun>(const __grid_constant__ LaunchArgs<1> args);

}  // namespace gpu
}  // namespace fusedinit
