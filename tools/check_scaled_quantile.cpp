// Exhaustive check of the CUDA kernel's scaled-table normal (csrc/cuda/thread_body.h,
// RowTable::standard_normal) against the contract's standard_normal (rng_math.h): every
// 32-bit word, bit for bit. The fill and the evaluation are the kernel's own host/device code;
// only fma_rn differs (std::fmaf here, fma.rn.f32 on the device: both one correctly rounded
// operation).
//   g++ -std=c++17 -O2 -march=native -ffp-contract=off -Icsrc tools/check_scaled_quantile.cpp
//   ./a.out [step]   (every step-th word, default 1: all of them; prints "ok" and exits 0, or
//                     the first mismatches and exits 1). tests/test_scaled_quantile.py runs it.
#include <cstdio>

#include "cuda/thread_body.h"

#include <cstdlib>

int main(int argc, char** argv) {
  const uint64_t step = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1;
  using namespace fusedinit;
  gpu::SharedTable table;
  gpu::fill_table(table, 0, 1);
  const gpu::RowTable rows{&table};
  uint64_t bad = 0;
  for (uint64_t w = 0; w < (1ull << 32); w += step) {
    const uint32_t word = static_cast<uint32_t>(w);
    const uint32_t a = float_to_bits(standard_normal(word));
    const uint32_t b = float_to_bits(rows.standard_normal(word));
    if (a != b && bad++ < 10) std::printf("word %08x: %08x != %08x\n", word, a, b);
  }
  std::printf(bad ? "%llu mismatches\n" : "ok\n", static_cast<unsigned long long>(bad));
  return bad != 0;
}
