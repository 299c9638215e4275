// The _mm512_* intrinsics of csrc/cpu/kernels_avx512.cpp, portable: SIMDe's implementations
// under their Intel names (SIMDE_ENABLE_NATIVE_ALIASES), and exact ones of our own where SIMDe
// (0.8.2) has none - _mm512_cmplt_epi32_mask (its cmp with _MM_CMPINT_LT, as Intel defines
// it), _mm512_lzcnt_epi32, _mm512_cvtps_ph, _mm512_cvtps_pd, _mm512_cvtepi32_epi16,
// _mm512_maskz_loadu_epi32 - or where its portable one differs from the instruction (the masked
// stores). Tests only: with it the AVX-512 kernels run, and are checked bit for bit, on CPUs
// without AVX-512. An intrinsic missing here cannot silently run natively: GCC's own _mm512_*
// are always_inline with an AVX-512 target, so calling one from this build fails to compile.
#pragma once

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <cstdint>
#include <cstring>

// The contract's fma is one correctly rounded operation. SIMDe's _mm512_fmadd_ps, without
// AVX-512, splits into two _mm256_fmadd_ps where the natural vector is 256 bits wide; that is
// the hardware vfmadd only with FMA enabled (-mfma), else a multiply then an add. Where the
// natural vector is 128 bits (AArch64), four _mm_fmadd_ps: vfmaq_f32 with the FMA feature,
// else again a multiply and an add. Any other path of SIMDe's rounds twice: refuse to build it.
#if defined(SIMDE_X86_AVX512F_NATIVE)
#error "AVX-512 is enabled: this portable build would run the native intrinsics, test those instead"
#elif defined(SIMDE_X86_FMA_NATIVE) && SIMDE_NATURAL_VECTOR_SIZE == 256
#define FI_SIMDE_FMA_PATH "2 x _mm256_fmadd_ps (x86 FMA, vfmadd)"
#elif defined(SIMDE_ARM_NEON_A32V7_NATIVE) && defined(SIMDE_ARCH_ARM_FMA) && \
    SIMDE_NATURAL_VECTOR_SIZE == 128 && !defined(SIMDE_X86_FMA_NATIVE)
#define FI_SIMDE_FMA_PATH "4 x _mm_fmadd_ps (NEON vfmaq_f32)"
#else
#error "SIMDe's _mm512_fmadd_ps is not a fused multiply-add with these flags (x86: use -mavx2 -mfma)"
#endif

#if !defined(SIMDE_ARCH_X86)
// Names that Intel's headers define and SIMDe aliases only on x86 (where it includes them) or
// not at all: the mask type and the shuffle and rounding constants the kernels spell.
typedef simde__mmask8 __mmask8;
#define _MM_PERM_CDAB 0xB1  // dwords 2, 3, 0, 1 of each 128-bit lane (Intel's _MM_PERM_ENUM)
#if !defined(_MM_FROUND_NO_EXC)
#define _MM_FROUND_NO_EXC SIMDE_MM_FROUND_NO_EXC
#endif
#endif

namespace fusedinit {
namespace simde_shim {

// Leading zeros of each 32-bit lane, 32 for a zero lane (vplzcntd).
inline simde__m512i lzcnt_epi32(simde__m512i a) {
  alignas(64) uint32_t v[16];
  simde_mm512_store_si512(v, a);
  for (uint32_t& x : v) x = x == 0 ? 32u : static_cast<uint32_t>(__builtin_clz(x));
  return simde_mm512_load_si512(v);
}

// binary32 -> binary16 bits, rounded to nearest even, as vcvtps2ph rounds with imm8 rounding
// bits 00: overflow gives infinity, results below the smallest normal half are subnormal (no
// flush to zero), a NaN stays a NaN of the same sign with its payload's top bits kept and the
// quiet bit set. Written from IEEE 754's definition, not from the contract's float_to_fp16_bits,
// so that comparing the two is a real check.
inline uint16_t half_bits_rne(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t magnitude = x & 0x7fffffffu;
  const uint32_t field = magnitude >> 23, fraction = magnitude & 0x7fffffu;
  if (field == 0xff) {
    return static_cast<uint16_t>(sign | 0x7c00u | (fraction != 0 ? 0x200u | (fraction >> 13) : 0u));
  }
  // magnitude = significand * 2^(exponent - 23), significand < 2^24
  const uint32_t significand = field != 0 ? fraction | 0x800000u : fraction;
  const int exponent = field != 0 ? static_cast<int>(field) - 127 : -126;
  if (exponent > 15) return static_cast<uint16_t>(sign | 0x7c00u);
  // Halves are multiples of 2^(max(exponent, -14) - 10): drop the bits below that quantum.
  const int drop = (exponent >= -14 ? exponent : -14) - 10 - (exponent - 23);
  if (drop > 25) return sign;  // below a quarter of the smallest subnormal: rounds to zero
  const uint64_t wide = significand;
  uint64_t kept = wide >> drop;
  const uint64_t rest = wide & ((uint64_t{1} << drop) - 1), half = uint64_t{1} << (drop - 1);
  if (rest > half || (rest == half && (kept & 1u))) ++kept;
  // Normal range: kept in [2^10, 2^11] (2^11: the carry into the next binade). Subnormal range:
  // kept in [0, 2^10] (2^10: the smallest normal). Either way the bits are a plain sum.
  const uint32_t bits = exponent >= -14
                            ? (static_cast<uint32_t>(exponent + 15) << 10) + static_cast<uint32_t>(kept) - 0x400u
                            : static_cast<uint32_t>(kept);
  return static_cast<uint16_t>(sign | (bits >= 0x7c00u ? 0x7c00u : bits));
}

// vpmovdw: the low 16 bits of each 32-bit lane (truncation, no saturation).
inline simde__m256i cvtepi32_epi16(simde__m512i a) {
  alignas(64) uint32_t in[16];
  alignas(32) uint16_t out[16];
  simde_mm512_store_si512(in, a);
  for (int i = 0; i < 16; ++i) out[i] = static_cast<uint16_t>(in[i]);
  return simde_mm256_load_si256(reinterpret_cast<const simde__m256i*>(out));
}

// vcvtps2pd: 8 floats widened to doubles, exact (a NaN stays a NaN, quieted, as the hardware
// conversion of a scalar does too).
inline simde__m512d cvtps_pd(simde__m256 a) {
  alignas(32) float in[8];
  alignas(64) double out[8];
  simde_mm256_store_ps(in, a);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<double>(in[i]);
  return simde_mm512_load_pd(out);
}

// Masked loads and stores touch only the lanes their mask selects (a zero-masked lane is not
// read, an unselected lane's memory not written), as the instructions do: the kernels rely on
// it at the end of a tensor. SIMDe 0.8.2's portable masked stores write the whole vector, zeros
// in the unselected lanes: with them the kernels overwrote up to 15 elements past a tensor's
// end (test_cpu_vs_reference.py: test_every_variant_writes_only_its_elements).
inline simde__m512i maskz_loadu_epi32(simde__mmask16 k, const void* p) {
  alignas(64) uint32_t v[16] = {};
  for (int i = 0; i < 16; ++i) {
    if ((k >> i) & 1) std::memcpy(&v[i], static_cast<const char*>(p) + 4 * i, 4);
  }
  return simde_mm512_load_si512(v);
}

template <typename Lane, typename Vector>
inline void mask_storeu(void* p, uint32_t k, Vector a) {
  constexpr int kLanes = sizeof(Vector) / sizeof(Lane);
  Lane v[kLanes];
  std::memcpy(v, &a, sizeof a);
  for (int i = 0; i < kLanes; ++i) {
    if ((k >> i) & 1) std::memcpy(static_cast<char*>(p) + sizeof(Lane) * i, &v[i], sizeof(Lane));
  }
}

template <int kImm>
inline simde__m256i cvtps_ph(simde__m512 a) {
  // Bits 2..0 of imm8 zero: round to nearest even by the immediate, whatever MXCSR holds; the
  // only rounding the kernels use, so the only one shimmed (bit 3, no exceptions, changes no bit).
  static_assert((kImm & 7) == 0, "only round-to-nearest-even conversions are shimmed");
  alignas(64) float in[16];
  alignas(32) uint16_t out[16];
  simde_mm512_store_ps(in, a);
  for (int i = 0; i < 16; ++i) out[i] = half_bits_rne(in[i]);
  return simde_mm256_load_si256(reinterpret_cast<const simde__m256i*>(out));
}

}  // namespace simde_shim
}  // namespace fusedinit

#undef _mm512_cmplt_epi32_mask
#define _mm512_cmplt_epi32_mask(a, b) simde_mm512_cmp_epi32_mask((a), (b), SIMDE_MM_CMPINT_LT)
#undef _mm512_lzcnt_epi32
#define _mm512_lzcnt_epi32(a) ::fusedinit::simde_shim::lzcnt_epi32(a)
#undef _mm512_cvtps_ph
#define _mm512_cvtps_ph(a, imm) ::fusedinit::simde_shim::cvtps_ph<(imm)>(a)
#undef _mm512_cvtepi32_epi16
#define _mm512_cvtepi32_epi16(a) ::fusedinit::simde_shim::cvtepi32_epi16(a)
#undef _mm512_cvtps_pd
#define _mm512_cvtps_pd(a) ::fusedinit::simde_shim::cvtps_pd(a)
#undef _mm512_maskz_loadu_epi32
#define _mm512_maskz_loadu_epi32(k, p) ::fusedinit::simde_shim::maskz_loadu_epi32((k), (p))
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps(p, k, a) ::fusedinit::simde_shim::mask_storeu<float>((p), (k), (a))
#undef _mm512_mask_storeu_pd
#define _mm512_mask_storeu_pd(p, k, a) ::fusedinit::simde_shim::mask_storeu<double>((p), (k), (a))
#undef _mm256_mask_storeu_epi16
#define _mm256_mask_storeu_epi16(p, k, a) ::fusedinit::simde_shim::mask_storeu<uint16_t>((p), (k), (a))
