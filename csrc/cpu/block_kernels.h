// The per-ISA building blocks of the CPU backend: each variant computes the contract's
// values for a contiguous range of logical indices of one tensor. Parallelism, strides and
// the padding row live in init_cpu.cpp; variants differ only in speed, never in bits.
#pragma once

#include <cstdint>

#include "../fusedinit/rng_math.h"

namespace fusedinit {
namespace cpu {

enum class DType : int { kFloat32, kFloat64, kBFloat16, kFloat16 };

struct Job {
  int64_t kind;
  float p[kParamsPerTensor];  // parameters rounded to float32, as the contract computes
  uint64_t stream;
};

// Elements [first, first + n) converted to `dtype` and written to contiguous `dst`.
using FillFn = void (*)(const Job& job, uint64_t seed, uint64_t first, int64_t n, DType dtype,
                        void* dst);
// The same elements as float32 values, before rounding (strided destinations use this).
using ValuesFn = void (*)(const Job& job, uint64_t seed, uint64_t first, int64_t n, float* out);

// float32 values of given words (tests drive the transforms with extreme words through it).
using TransformFn = void (*)(const Job& job, const uint32_t* words, int64_t n, float* out);

struct BlockKernels {
  const char* name;
  FillFn fill;
  ValuesFn values;
  TransformFn transform;
};

BlockKernels generic_kernels();
BlockKernels avx2_kernels();    // falls back to generic_kernels() where not built
BlockKernels avx512_kernels();  // falls back to generic_kernels() where not built

// Best variant this CPU supports, unless overridden with set_isa (tests compare variants).
const BlockKernels& active_kernels();
// "auto", "generic", "avx2" or "avx512"; returns the name now active. Throws on unknown names
// and on variants the CPU cannot run.
const char* set_isa(const char* name);

static inline bool uniform_needs_finish(const Job& job) {
  return job.kind == kUniform && job.p[0] < job.p[1];
}

// One float32 value of the contract (before rounding) from its word.
static inline float value_from_word(const Job& job, uint32_t w) {
  switch (job.kind) {
    case kNormal:
      return normal_value(w, job.p[0], job.p[1]);
    case kUniform:
      return uniform_value(w, job.p[0], job.p[1]);
    case kTruncNormal:
      return trunc_normal_value(w, job.p[0], job.p[1], job.p[2], job.p[3], job.p[4], job.p[5]);
    default:
      return job.p[0];
  }
}

// Scalar store of one value into any destination format, including uniform's bound.
static inline void store_scalar(const Job& job, float v, DType dtype, void* dst) {
  const bool finish = uniform_needs_finish(job);
  switch (dtype) {
    case DType::kFloat32: {
      uint32_t bits = float_to_bits(v);
      if (finish) bits = finish_uniform_f32_bits(bits, job.p[1]);
      *static_cast<float*>(dst) = bits_to_float(bits);
      break;
    }
    case DType::kFloat64: {
      uint32_t bits = float_to_bits(v);
      if (finish) bits = finish_uniform_f32_bits(bits, job.p[1]);
      *static_cast<double*>(dst) = static_cast<double>(bits_to_float(bits));
      break;
    }
    case DType::kBFloat16: {
      uint16_t h = float_to_bf16_bits(v);
      if (finish) h = finish_uniform_bf16(h, job.p[1]);
      *static_cast<uint16_t*>(dst) = h;
      break;
    }
    case DType::kFloat16: {
      uint16_t h = float_to_fp16_bits(v);
      if (finish) h = finish_uniform_fp16(h, job.p[1]);
      *static_cast<uint16_t*>(dst) = h;
      break;
    }
  }
}

static inline int64_t dtype_size(DType dtype) {
  return dtype == DType::kFloat64 ? 8 : dtype == DType::kFloat32 ? 4 : 2;
}

}  // namespace cpu
}  // namespace fusedinit
