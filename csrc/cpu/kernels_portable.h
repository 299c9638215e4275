// Portable block kernels: plain loops over the scalar contract, written so the compiler can
// vectorize them. Included by kernels_generic.cpp (baseline ISA) and kernels_avx2.cpp (same
// code under an AVX2 target pragma); FI_VARIANT names the namespace and the variant.
#include "block_kernels.h"

namespace fusedinit {
namespace cpu {
namespace FI_VARIANT {

constexpr int64_t kBlock = 1024;  // elements per inner block: buffers stay in L1

inline void words_block(uint64_t seed, uint64_t stream, uint64_t first, int64_t n,
                        uint32_t* out) {
  // out[k] is the word of element first + k; whole Philox groups are computed.
  const uint64_t g0 = first >> 2;
  const uint64_t g1 = (first + n + 3) >> 2;
  const int64_t skip = static_cast<int64_t>(first & 3);
  uint32_t tmp[kBlock + 8];
  for (uint64_t g = g0; g < g1; ++g) {
    const Words4 w = philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32),
                                   static_cast<uint32_t>(stream),
                                   static_cast<uint32_t>(stream >> 32),
                                   static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    const int64_t base = static_cast<int64_t>(g - g0) * 4;
    tmp[base + 0] = w.v[0];
    tmp[base + 1] = w.v[1];
    tmp[base + 2] = w.v[2];
    tmp[base + 3] = w.v[3];
  }
  for (int64_t k = 0; k < n; ++k) out[k] = tmp[skip + k];
}

inline void transform(const Job& job, const uint32_t* words, int64_t n, float* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = value_from_word(job, words[k]);
}

inline void values(const Job& job, uint64_t seed, uint64_t first, int64_t n, float* out) {
  uint32_t words[kBlock];
  for (int64_t done = 0; done < n; done += kBlock) {
    const int64_t m = n - done < kBlock ? n - done : kBlock;
    if (job.kind == kConstant) {
      for (int64_t k = 0; k < m; ++k) out[done + k] = job.p[0];
      continue;
    }
    words_block(seed, job.stream, first + done, m, words);
    transform(job, words, m, out + done);
  }
}

inline void fill(const Job& job, uint64_t seed, uint64_t first, int64_t n, DType dtype,
                 void* dst) {
  float buf[kBlock];
  char* out = static_cast<char*>(dst);
  const int64_t esize = dtype_size(dtype);
  for (int64_t done = 0; done < n; done += kBlock) {
    const int64_t m = n - done < kBlock ? n - done : kBlock;
    values(job, seed, first + done, m, buf);
    for (int64_t k = 0; k < m; ++k) store_scalar(job, buf[k], dtype, out + (done + k) * esize);
  }
}

inline BlockKernels kernels(const char* name) { return BlockKernels{name, &fill, &values, &transform}; }

}  // namespace FI_VARIANT
}  // namespace cpu
}  // namespace fusedinit
