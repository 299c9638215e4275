// The init kernel for up to 1 tensors per launch (init_kernel.cuh).
#include "init_kernel.cuh"

FUSEDINIT_INSTANTIATE_INIT_KERNEL(1)
