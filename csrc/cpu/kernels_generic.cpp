#define FI_VARIANT generic
#include "kernels_portable.h"

namespace fusedinit {
namespace cpu {
BlockKernels generic_kernels() { return generic::kernels("generic"); }
}  // namespace cpu
}  // namespace fusedinit
