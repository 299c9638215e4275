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
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");
  }
#else
  (void)isa;
#endif
  return false;
}

// One immutable table per variant; the active one is an atomic pointer to it, so a switch
// (set_isa, tests only) racing with an init call never hands that call a half-copied table.
const BlockKernels* variant(const std::string& n) {
  static const BlockKernels generic = generic_kernels(), avx2 = avx2_kernels(),
                            avx512 = avx512_kernels();
  if (n == "avx512") return &avx512;
  if (n == "avx2") return &avx2;
  return &generic;
}

const BlockKernels* best() {
  if (cpu_has("avx512")) return variant("avx512");
  if (cpu_has("avx2")) return variant("avx2");
  return variant("generic");
}

std::atomic<const BlockKernels*>& active() {
  static std::atomic<const BlockKernels*> k{best()};
  return k;
}

}  // namespace

const BlockKernels& active_kernels() { return *active().load(std::memory_order_acquire); }

const char* set_isa(const char* name) {
  const std::string n(name);
  const BlockKernels* chosen = nullptr;
  if (n == "auto") {
    chosen = best();
  } else if (n == "generic") {
    chosen = variant(n);
  } else if (n == "avx2" || n == "avx512") {
    if (!cpu_has(name)) throw std::invalid_argument("this CPU cannot run the " + n + " kernels");
    chosen = variant(n);
  } else {
    throw std::invalid_argument("unknown CPU ISA '" + n + "' (auto, generic, avx2, avx512)");
  }
  active().store(chosen, std::memory_order_release);
  return chosen->name;
}

}  // namespace cpu
}  // namespace fusedinit
