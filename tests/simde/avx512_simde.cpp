// Test-only library: csrc/cpu/kernels_avx512.cpp itself, compiled a second time on SIMDe's
// portable intrinsics (avx512_simde.h), as the CPU kernel variant "avx512-simde" - the AVX-512
// kernels' logic run on any CPU with FMA. tests/simde_variant.py builds it (one JIT compile)
// and adds the variant to the extension's table (fusedinit_add_cpu_variant); the probes below
// let tests check the intrinsics it rests on. Built with -fvisibility=hidden: only the C entry
// points leave it, so its copies of the kernels never stand in for the extension's.
#define FUSEDINIT_AVX512_SIMDE 1
#include "avx512_simde.h"

#include "cpu/kernels_avx512.cpp"

#define FI_EXPORT extern "C" __attribute__((visibility("default")))

FI_EXPORT const fusedinit::cpu::BlockKernels* fusedinit_simde_avx512_kernels() {
  static const fusedinit::cpu::BlockKernels k = [] {
    fusedinit::cpu::BlockKernels v = fusedinit::cpu::avx512_kernels();
    v.name = "avx512-simde";
    return v;
  }();
  return &k;
}

// How SIMDe's _mm512_fmadd_ps is computed in this build (avx512_simde.h refuses unfused ones).
FI_EXPORT const char* fusedinit_simde_fma_path() { return FI_SIMDE_FMA_PATH; }

// The probes take and give n values, n a multiple of 16, through the intrinsics exactly as
// the kernels spell them.
FI_EXPORT void fusedinit_simde_fmadd_ps(const float* a, const float* b, const float* c, int64_t n,
                                        float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i),
                                              _mm512_loadu_ps(c + i)));
  }
}

FI_EXPORT void fusedinit_simde_lzcnt_epi32(const uint32_t* in, int64_t n, uint32_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    _mm512_storeu_si512(out + i, _mm512_lzcnt_epi32(_mm512_loadu_si512(in + i)));
  }
}

FI_EXPORT void fusedinit_simde_cvtps_ph(const float* in, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(in + i),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

// The hardware conversion (F16C's vcvtps2ph, the 256-bit form of the instruction the native
// kernels run) on the same values; returns 0 where this build has no F16C.
FI_EXPORT int fusedinit_native_cvtps_ph(const float* in, int64_t n, uint16_t* out) {
#if defined(SIMDE_X86_F16C_NATIVE)
  for (int64_t i = 0; i < n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  return 1;
#else
  (void)in;
  (void)n;
  (void)out;
  return 0;
#endif
}
