// Run-time choice of the CPU kernel variant: one build runs on any x86-64 (and builds on
// other architectures, where only the portable variant exists).
#include <atomic>
#include <cstring>
#include <mutex>
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

// Variants registered from outside this library (tests only, see fusedinit_add_cpu_variant
// below); the package itself registers none. Each slot is set once and never freed, so a
// pointer read from it stays valid for as long as the process runs.
constexpr int kMaxAdded = 4;
std::atomic<const BlockKernels*> added[kMaxAdded];
std::mutex adding;

const BlockKernels* added_variant(const std::string& n) {
  for (const auto& slot : added) {
    const BlockKernels* k = slot.load(std::memory_order_acquire);
    if (k != nullptr && n == k->name) return k;
  }
  return nullptr;
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
  } else if (const BlockKernels* k = added_variant(n)) {
    chosen = k;
  } else {
    throw std::invalid_argument("unknown CPU ISA '" + n + "' (auto, generic, avx2, avx512)");
  }
  active().store(chosen, std::memory_order_release);
  return chosen->name;
}

}  // namespace cpu
}  // namespace fusedinit

// Tests only: adds a variant built outside this library - the AVX-512 kernels compiled with
// SIMDe's portable intrinsics (tests/simde/), which runs on CPUs without AVX-512 - so set_isa
// selects it by its name like the built-in ones. A C symbol, found with ctypes: no op takes an
// address. The caller keeps the kernels' code loaded for the life of the process. Returns 0,
// or -1 for a null or built-in name, -2 when every slot is taken. Adding a name again keeps
// the first registration (its code stays loaded, so it is still valid).
extern "C" __attribute__((visibility("default"))) int fusedinit_add_cpu_variant(
    const fusedinit::cpu::BlockKernels* kernels) {
  using namespace fusedinit::cpu;
  if (kernels == nullptr || kernels->name == nullptr) return -1;
  const std::string n(kernels->name);
  if (n == "auto" || n == "generic" || n == "avx2" || n == "avx512") return -1;
  std::lock_guard<std::mutex> lock(adding);
  if (added_variant(n) != nullptr) return 0;
  for (auto& slot : added) {
    if (slot.load(std::memory_order_relaxed) == nullptr) {
      slot.store(new BlockKernels(*kernels), std::memory_order_release);
      return 0;
    }
  }
  return -2;
}
