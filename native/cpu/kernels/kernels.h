#pragma once
// The kernel table: one entry per hot inner loop, one table per instruction set (scalar.cpp is the
// readable reference; avx2.cpp and avx512.cpp are the fast versions). kernels() is the single
// dispatch point: it returns the table of the active ISA (see cpu_features.h).
#include <cstdint>

#include "../cpu_features.h"

namespace falcon::cpu {

// y[m * y_stride + n] = dot(x row m, w row n) (+ bias[n]) for m in [0, rows), n in [n_begin, n_end).
// x rows (`x_stride` elements apart) are float32, except for bfloat16 weights, where x arrives already
// rounded to bfloat16 (bf16 models multiply in bf16 with float32 accumulation, as keras-hub and torch do).
// w rows are `k` elements apart; every row length is `k`.
using MatmulKernel = void (*)(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin,
                              int64_t n_end, int64_t k, const float* bias, float* y, int64_t y_stride);

struct KernelTable {
  Isa isa;
  MatmulKernel matmul_f32;
  MatmulKernel matmul_bf16;
  MatmulKernel matmul_f16;
  // int8 weights with one float32 scale per output row (scales[n]); x is float32.
  void (*matmul_i8)(const float* x, int64_t x_stride, int64_t rows, const int8_t* w, const float* scales,
                    int64_t n_begin, int64_t n_end, int64_t k, const float* bias, float* y, int64_t y_stride);
  // out[c] = sum_j p[j] * v[j * d + c] for c < d, j < count (attention's probability-weighted values).
  void (*weighted_sum)(const float* p, const float* v, int64_t count, int64_t d, float* out);
  // x[i] = exp(x[i] - shift) for n values; returns their sum.
  float (*exp_sum)(float* x, int64_t n, float shift);
  // Exact-erf GELU in place.
  void (*gelu)(float* x, int64_t n);
};

const KernelTable& scalar_kernels();
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();

// The table of the active ISA.
const KernelTable& kernels();

}  // namespace falcon::cpu
