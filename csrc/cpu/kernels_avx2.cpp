// The portable kernels compiled for AVX2 (and FMA, so the contract's fma_rn is one vfmadd
// rather than a libm call) so the compiler vectorizes their loops; selected at run time only
// on CPUs that report AVX2 and FMA.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// Library headers come before the target pragma: an inline function of theirs compiled for a
// wider ISA here could otherwise be the copy the linker keeps for every caller.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")
#define FI_VARIANT avx2
#include "kernels_portable.h"
#pragma GCC pop_options

namespace fusedinit {
namespace cpu {
BlockKernels avx2_kernels() { return avx2::kernels("avx2"); }
}  // namespace cpu
}  // namespace fusedinit
#else
#include "block_kernels.h"
namespace fusedinit {
namespace cpu {
BlockKernels avx2_kernels() { return generic_kernels(); }
}  // namespace cpu
}  // namespace fusedinit
#endif
