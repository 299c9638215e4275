// Run-time choice of the CPU kernel variant: one build runs on any x86-64 (and builds on
// other architectures, where only the portable variant exists).
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "block_kernels.h"

namespace fusedinit {
namespace cpu {
namespace {

bool cpu_has(const char* isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (std::strcmp(isa, "avx512") == 0) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
  }
  if (std::strcmp(isa, "avx2") == 0) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("bmi2");
  }
#else
  (void)isa;
#endif
  return false;
}

BlockKernels best() {
  if (cpu_has("avx512")) return avx512_kernels();
  if (cpu_has("avx2")) return avx2_kernels();
  return generic_kernels();
}

BlockKernels& active() {
  static BlockKernels k = best();
  return k;
}

}  // namespace

const BlockKernels& active_kernels() { return active(); }

const char* set_isa(const char* name) {
  const std::string n(name);
  if (n == "auto") {
    active() = best();
  } else if (n == "generic") {
    active() = generic_kernels();
  } else if (n == "avx2" || n == "avx512") {
    if (!cpu_has(name)) throw std::invalid_argument("this CPU cannot run the " + n + " kernels");
    active() = n == "avx2" ? avx2_kernels() : avx512_kernels();
  } else {
    throw std::invalid_argument("unknown CPU ISA '" + n + "' (auto, generic, avx2, avx512)");
  }
  return active().name;
}

}  // namespace cpu
}  // namespace fusedinit
