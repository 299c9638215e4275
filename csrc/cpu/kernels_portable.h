// Portable block kernels: plain loops over the scalar contract, written so the compiler can
// vectorize them. Included by kernels_generic.cpp (baseline ISA) and kernels_avx2.cpp (same
// code under an AVX2 target pragma); FI_VARIANT names the namespace and the variant.
#include "block_kernels.h"

namespace fusedinit {
namespace cpu {
namespace FI_VARIANT {

constexpr int64_t kBlock = 1024;  // elements per inner block: buffers stay in L1

constexpr int kLanes = 16;  // groups per batch: the round loop below vectorizes across them

// Philox4x32-10 over kLanes consecutive groups in structure-of-arrays form, so the compiler
// turns each round into vector multiplies (the scalar philox4x32_10 is one group at a time).
inline void philox_batch(uint64_t g, uint64_t seed, uint64_t stream, uint32_t* out) {
  uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    c0[l] = static_cast<uint32_t>(g + l);
    c1[l] = static_cast<uint32_t>((g + l) >> 32);
    c2[l] = static_cast<uint32_t>(stream);
    c3[l] = static_cast<uint32_t>(stream >> 32);
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    for (int l = 0; l < kLanes; ++l) {
      const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0[l];
      const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2[l];
      c0[l] = static_cast<uint32_t>(p1 >> 32) ^ c1[l] ^ k0;
      c2[l] = static_cast<uint32_t>(p0 >> 32) ^ c3[l] ^ k1;
      c1[l] = static_cast<uint32_t>(p1);
      c3[l] = static_cast<uint32_t>(p0);
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  for (int l = 0; l < kLanes; ++l) {
    out[4 * l + 0] = c0[l];
    out[4 * l + 1] = c1[l];
    out[4 * l + 2] = c2[l];
    out[4 * l + 3] = c3[l];
  }
}

inline void words_block(uint64_t seed, uint64_t stream, uint64_t first, int64_t n,
                        uint32_t* out) {
  // out[k] is the word of element first + k; whole Philox groups are computed.
  const uint64_t g0 = first >> 2;
  const int64_t skip = static_cast<int64_t>(first & 3);
  const int64_t groups = (skip + n + 3) >> 2;
  uint32_t tmp[kBlock + 8 + 4 * kLanes];
  for (int64_t g = 0; g < groups; g += kLanes) philox_batch(g0 + g, seed, stream, tmp + 4 * g);
  for (int64_t k = 0; k < n; ++k) out[k] = tmp[skip + k];
}

// normal_value for kLanes words at once, step by step across the lanes (structure of arrays):
// the same operations in the same order per lane, but the lanes' Horner chains are
// independent, so the compiler vectorizes them (or the core overlaps them) instead of waiting
// out one chain of dependent fma per element.
inline void normal_lanes(const Job& job, const uint32_t* w, float* out) {
  uint32_t row[kLanes];
  float s[kLanes], r[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    const NormalWord nw = normal_word(w[l]);
    row[l] = quantile_row(nw.octave, nw.mant23);
    s[l] = sub_rn(quantile_t(nw.mant23), kNormalTable[kNormalTableCenter][row[l]]);
    r[l] = kNormalTable[kNormalTableDegree][row[l]];
  }
  for (int k = kNormalTableDegree - 1; k >= 0; --k) {
    for (int l = 0; l < kLanes; ++l) r[l] = fma_rn(r[l], s[l], kNormalTable[k][row[l]]);
  }
  for (int l = 0; l < kLanes; ++l) out[l] = fma_rn(job.p[1], apply_sign(r[l], w[l]), job.p[0]);
}

inline void transform(const Job& job, const uint32_t* words, int64_t n, float* out) {
  int64_t k = 0;
  if (job.kind == kNormal) {
    for (; k + kLanes <= n; k += kLanes) normal_lanes(job, words + k, out + k);
  }
  for (; k < n; ++k) out[k] = value_from_word(job, words[k]);
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
