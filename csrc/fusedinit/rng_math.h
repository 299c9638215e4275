// The random-stream contract of fusedinit (docs/rng.md), as scalar code that the host
// compiler and nvcc both compile. Every backend computes exactly these operations in
// exactly this order: only integer ops, correctly rounded float add/sub/mul, explicit fused
// multiply-adds (fma_rn: one correctly rounded IEEE-754 operation, where the contract writes
// one) and int->float conversions of exactly representable values, so the bits agree
// everywhere. What would break that is the compiler contracting a*b+c on its own, so build
// with contraction off (-ffp-contract=off, nvcc --fmad=false); the device path also uses the
// explicit _rn intrinsics so a stray flag cannot change a value.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// static: the CPU backend compiles this header once per ISA variant, and an out-of-line copy
// built for AVX-512 must never be the one an older CPU links to.
#if defined(__CUDACC__)
#define FI_HD static __host__ __device__ __forceinline__
#define FI_HD_MEMBER __host__ __device__ __forceinline__
#else
#define FI_HD static inline
#define FI_HD_MEMBER inline
#endif

#ifndef FI_TABLE_STORAGE
#define FI_TABLE_STORAGE inline constexpr
#endif

#include "normal_table.h"

namespace fusedinit {

// Distribution codes shared by the op schema, the kernels and the Python layer.
enum Kind : int64_t {
  kNormal = 0,      // params: mean, std
  kUniform = 1,     // params: a, b             (U[a, b))
  kTruncNormal = 2, // params: mean, std, a, b, p_lo, p_hi (p_* = Phi((bound-mean)/std))
  kConstant = 3,    // params: value
};
constexpr int kParamsPerTensor = 6;

// ---- Philox4x32-10, exactly as Random123 defines it -------------------------------
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

struct Words4 {
  uint32_t v[4];
};

// The key of each round: (k0 + r * W0, k1 + r * W1). A GPU kernel computes them once per
// launch so that every round reads its key as an operand instead of adding it again.
struct RoundKeys {
  uint32_t k0[kPhiloxRounds];
  uint32_t k1[kPhiloxRounds];
};

FI_HD RoundKeys philox_round_keys(uint32_t k0, uint32_t k1) {
  RoundKeys keys;
  for (int round = 0; round < kPhiloxRounds; ++round) {
    keys.k0[round] = k0;
    keys.k1[round] = k1;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return keys;
}

// Rounds kFirst .. 9 of Philox4x32-10 on the counter state (c0, c1, c2, c3). The CUDA kernel's
// loops compute rounds 0 and 1 once per loop where most of their inputs are loop constants,
// then run the rest here (thread_body.h, PhiloxLoop).
template <int kFirst>
FI_HD Words4 philox_rounds(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                           const RoundKeys& keys) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = kFirst; round < kPhiloxRounds; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ keys.k0[round];
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ keys.k1[round];
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
  }
  return Words4{{c0, c1, c2, c3}};
}

FI_HD Words4 philox4x32_10_keyed(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                 const RoundKeys& keys) {
  return philox_rounds<0>(c0, c1, c2, c3, keys);
}

FI_HD Words4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                           uint32_t k1) {
  return philox4x32_10_keyed(c0, c1, c2, c3, philox_round_keys(k0, k1));
}

// The 32-bit word for logical element `index` of stream `stream` under `seed`:
// counter = (index / 4 as two words, stream as two words), key = seed, lane = index % 4.
FI_HD uint32_t stream_word(uint64_t seed, uint64_t stream, uint64_t index) {
  const uint64_t group = index >> 2;
  const Words4 w = philox4x32_10(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                                 static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
                                 static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return w.v[index & 3];
}

// Logical index of element i of a tensor placed by (offset, run, run_stride) in a larger
// logical tensor (ops.cpp, index_map): runs of `run` consecutive indices, `run_stride` apart.
FI_HD int64_t placed_index(int64_t offset, int64_t run, int64_t run_stride, int64_t i) {
  return run == 0 ? offset + i : offset + (i / run) * run_stride + i % run;
}

// ---- bit helpers --------------------------------------------------------------------
FI_HD float bits_to_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
#endif
}

FI_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
#endif
}

FI_HD int clz32(uint32_t x) {  // x != 0
#if defined(__CUDA_ARCH__)
  return __clz(x);
#elif defined(__GNUC__) || defined(__clang__)
  return __builtin_clz(x);
#else
  int n = 0;
  while (!(x & 0x80000000u)) {
    x <<= 1;
    ++n;
  }
  return n;
#endif
}

FI_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

FI_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

FI_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// a * b + c with one rounding (IEEE-754 fusedMultiplyAdd, round to nearest even). On the device
// it is inline PTX, so benchmarks/sass_report.py can tell the contract's fma (inside an
// inline-asm block) from one the compiler contracted (outside): the latter fails the scan.
// std::fmaf is correctly rounded everywhere (the vfmadd instruction where the ISA has it).
FI_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(a), "f"(b), "f"(c));
  return r;
#else
  return std::fmaf(a, b, c);
#endif
}

// ---- words -> uniforms ------------------------------------------------------------
// [0, 1 - 2^-24] on a 2^-24 grid: the top 24 bits, exactly representable.
FI_HD float uniform_closed_open(uint32_t w) {
  return mul_rn(static_cast<float>(w >> 8), 0x1p-24f);
}

// [2^-24, 1 - 2^-24], odd multiples of 2^-24: strictly inside (0, 1), exactly representable.
FI_HD float uniform_open(uint32_t w) {
  return mul_rn(static_cast<float>((w >> 9) << 1 | 1u), 0x1p-24f);
}

// ---- half-normal quantile ---------------------------------------------------------
// z = Phi^-1(1 - q/2) for q = t * 2^(octave - 32), t = 1.mant23 (binary), from the
// piecewise degree-6 table (max abs error documented in normal_table.h).
FI_HD float normal_coefficient(int k, uint32_t row) {
#if defined(__CUDA_ARCH__)
  return kNormalTableDevice[k][row];
#else
  return kNormalTable[k][row];
#endif
}

// Where the quantile reads a row (c0..c6, then the expansion point m): by default the table in
// normal_table.h; the CUDA kernel passes its shared-memory copy. Only where the numbers come
// from changes.
struct GlobalTable {
  FI_HD_MEMBER void row(uint32_t r, float c[kNormalTableColumns]) const {
    for (int k = 0; k < kNormalTableColumns; ++k) c[k] = normal_coefficient(k, r);
  }
};

// The quantile in steps so a kernel can fetch the row its own way: the row of the argument,
// the argument t itself, then Horner's rule in s = t - m with one fma per step.
FI_HD uint32_t quantile_row(uint32_t octave, uint32_t mant23) {
  // + rather than | (the same for mant23 < 2^23) lets a compiler fold it into the extraction.
  return octave * 2 + (mant23 >> 22);
}

FI_HD float quantile_t(uint32_t mant23) { return bits_to_float(0x3f800000u + mant23); }

// s = t - m is exact (t and m share the binade [1, 2) and the 2^-23 grid), |s| <= 1/4.
static_assert(kNormalTableDegree == 6, "quantile_poly unrolls Horner's rule for degree 6");

// Horner's rule for c0..c6 at s, one fma a step (the CUDA kernel also runs it on a scaled row).
FI_HD float horner6(float s, const float c[kNormalTableColumns]) {
  float r = c[6];
  r = fma_rn(r, s, c[5]);
  r = fma_rn(r, s, c[4]);
  r = fma_rn(r, s, c[3]);
  r = fma_rn(r, s, c[2]);
  r = fma_rn(r, s, c[1]);
  r = fma_rn(r, s, c[0]);
  return r;
}

FI_HD float quantile_poly(float t, const float c[kNormalTableColumns]) {
  return horner6(sub_rn(t, c[kNormalTableCenter]), c);
}

template <class Table = GlobalTable>
FI_HD float half_normal_quantile(uint32_t octave, uint32_t mant23, const Table& table = Table()) {
  float c[kNormalTableColumns];
  table.row(quantile_row(octave, mant23), c);
  return quantile_poly(quantile_t(mant23), c);
}

// A word's octave and 23 mantissa bits of k = 2b + 1 (b = the low 31 bits): q = k / 2^32.
struct NormalWord {
  uint32_t octave;
  uint32_t mant23;
};

FI_HD NormalWord normal_word(uint32_t w) {
  const uint32_t k = (w << 1) | 1u;
#if defined(__CUDA_ARCH__)
  // The same numbers with fewer instructions: k (non-zero) converted to float32 rounding
  // toward zero keeps exactly its leading 24 bits, so the float's exponent field is
  // 127 + octave and its mantissa field is mant23 (one I2F instead of FLO and shifts).
  const uint32_t f = __float_as_uint(__uint2float_rz(k));
  return NormalWord{(f >> 23) - 127u, f & 0x7fffffu};
#else
  const int lz = clz32(k);
  return NormalWord{static_cast<uint32_t>(31 - lz), ((k << lz) >> 8) & 0x7fffffu};
#endif
}

// The top bit of the word is the sign of the normal.
FI_HD float apply_sign(float magnitude, uint32_t w) {
  return bits_to_float(float_to_bits(magnitude) ^ (w & 0x80000000u));
}

// Standard normal from one word: the top bit is the sign, the other 31 bits b give the
// two-sided tail probability q = (2b + 1) / 2^32, so |z| reaches 6.23 and never diverges.
template <class Table = GlobalTable>
FI_HD float standard_normal(uint32_t w, const Table& table = Table()) {
#if defined(__CUDA_ARCH__)
  // The same numbers read straight off f = the bits of k rounded toward zero to float32
  // ((127 + octave) << 23 | mant23, see normal_word): quantile_row is (f >> 22) - 254 and
  // quantile_t is f's significand in [1, 2). Three integer ops instead of six on the hot path.
  const uint32_t f = __float_as_uint(__uint2float_rz((w << 1) | 1u));
  // Opaque to the optimiser, which would otherwise rewrite (f >> 22) * stride + base as a
  // shift, a mask and an add; t's bits are one lop3 with both masks in registers.
  uint32_t top = f >> 22, t, mask = 0x7fffffu, one = 0x3f800000u;
  asm("" : "+r"(top), "+r"(mask), "+r"(one));
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(t) : "r"(f), "r"(mask), "r"(one));  // (f & mask) | one
  float c[kNormalTableColumns];
  table.row(top - 254u, c);
  return apply_sign(quantile_poly(bits_to_float(t), c), w);
#else
  const NormalWord n = normal_word(w);
  return apply_sign(half_normal_quantile(n.octave, n.mant23, table), w);
#endif
}

// Half-normal quantile of a float q, clamped to [2^-32, 1 - 2^-24].
template <class Table = GlobalTable>
FI_HD float half_normal_quantile_of(float q, const Table& table = Table()) {
  q = q < 0x1p-32f ? 0x1p-32f : q;
  q = q > 0x1.fffffep-1f ? 0x1.fffffep-1f : q;
  const uint32_t b = float_to_bits(q);
  return half_normal_quantile((b >> 23) - 95u, b & 0x7fffffu, table);  // octave = exponent + 32
}

// ---- distributions (float32 values, before rounding to the destination) ----------
template <class Table = GlobalTable>
FI_HD float normal_value(uint32_t w, float mean, float std, const Table& table = Table()) {
  return fma_rn(std, standard_normal(w, table), mean);
}

FI_HD float uniform_value(uint32_t w, float a, float b) {
  return fma_rn(sub_rn(b, a), uniform_closed_open(w), a);
}

// Inverse-CDF truncated normal: p uniform in [p_lo, p_hi], mapped through the quantile
// by its nearer tail so both tails keep their resolution, then clamped to [a, b].
template <class Table = GlobalTable>
FI_HD float trunc_normal_value(uint32_t w, float mean, float std, float a, float b, float p_lo,
                               float p_hi, const Table& table = Table()) {
  const float p = fma_rn(sub_rn(p_hi, p_lo), uniform_open(w), p_lo);
  const bool lower = p < 0.5f;
  const float tail = lower ? p : sub_rn(1.0f, p);  // exact (Sterbenz) for p >= 0.5
  float z = half_normal_quantile_of(add_rn(tail, tail), table);
  z = lower ? -z : z;
  float v = fma_rn(std, z, mean);
  v = v < a ? a : v;
  v = v > b ? b : v;
  return v;
}

// ---- rounding to the destination dtype (round to nearest even) -------------------
FI_HD uint16_t float_to_bf16_bits(float f) {
  const uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

FI_HD uint16_t float_to_fp16_bits(float f) {
  const uint32_t x = float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);      // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);     // rounds to inf
  if (a >= 0x38800000u) {                                                 // normal half
    const uint32_t r = a - 0x38000000u;
    return static_cast<uint16_t>(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
  }
  if (a < 0x33000000u) return static_cast<uint16_t>(sign);                // below 2^-25
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;                         // subnormal half
  const uint32_t shift = 126u - (a >> 23);
  uint32_t r = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  r += (rem > half || (rem == half && (r & 1u))) ? 1u : 0u;
  return static_cast<uint16_t>(sign | r);
}

FI_HD float bf16_bits_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

FI_HD float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1fu) return bits_to_float(sign | 0x7f800000u | (m << 13));
  if (e != 0) return bits_to_float(sign | ((e + 112u) << 23) | (m << 13));
  return bits_to_float(sign | float_to_bits(mul_rn(static_cast<float>(m), 0x1p-24f)));
}

// The next value below x in a 16- or 32-bit IEEE format given by its bits (x not NaN/-inf).
FI_HD uint32_t next_down_bits(uint32_t bits, uint32_t sign_bit) {
  const uint32_t magnitude = bits & (sign_bit - 1u);
  if (magnitude == 0) return sign_bit | 1u;         // +-0 -> -smallest subnormal
  return (bits & sign_bit) ? bits + 1u : bits - 1u;  // away from / toward zero
}

// Uniform's half-open bound, applied after rounding to the destination format: a value that
// rounded up to b or beyond becomes the next value below it (only when a < b).
FI_HD uint32_t finish_uniform_f32_bits(uint32_t bits, float b) {
  return bits_to_float(bits) >= b ? next_down_bits(bits, 0x80000000u) : bits;
}

FI_HD uint16_t finish_uniform_bf16(uint16_t h, float b) {
  return bf16_bits_to_float(h) >= b ? static_cast<uint16_t>(next_down_bits(h, 0x8000u)) : h;
}

FI_HD uint16_t finish_uniform_fp16(uint16_t h, float b) {
  return fp16_bits_to_float(h) >= b ? static_cast<uint16_t>(next_down_bits(h, 0x8000u)) : h;
}

}  // namespace fusedinit
