// The one entry point of init_kernel.cu, declared without any torch header.
#pragma once

#include <cuda_runtime_api.h>

#include "launch_layout.h"

namespace fusedinit {
namespace gpu {

// Launches the init kernel on `stream` (args.descs in device memory); the caller checks it.
void launch_init(const LaunchArgs& args, int64_t grid, cudaStream_t stream);

}  // namespace gpu
}  // namespace fusedinit
