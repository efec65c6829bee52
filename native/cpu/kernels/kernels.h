#pragma once
// The kernel table: one entry per hot inner loop, one table per instruction set (scalar.cpp is the
// readable reference; avx2.cpp and avx512.cpp are the fast versions). kernels() is the single
// dispatch point: it returns the table of the active ISA (see cpu_features.h).
#include <cstdint>

#include "../../core/weights.h"
#include "../cpu_features.h"

namespace falcon::cpu {

// Input rows are packed before a matmul (ops/linear.cpp) into blocks of kPackedRows rows: block b
// holds, for every step s along k, the 32-bit units of its rows side by side:
//   packed[(b · steps + s) · kPackedRows + r] = unit(row b·kPackedRows + r, step s)
// (slots of rows past the last one are left undefined; kernels never read them)
// A unit is one float32 x[m][s] (steps = cols), or for bfloat16 weights the pair (x[m][2s], x[m][2s+1])
// rounded to bf16 (steps = cols / 2 rounded up): bf16 models multiply in bf16 with float32 accumulation.
constexpr int64_t kPackedRows = 8;

// y[m · y_stride + n] = Σ_k x[m][k] · w(n, k) (· scale[n] for int8) + bias[n] for m < rows and
// n in [first_panel · 32, min(end_panel · 32, w.rows)). `bias` may be null. w.dtype picks the kernel.
using MatmulKernel = void (*)(const uint32_t* packed_x, int64_t rows, const WeightMatrix& w, int64_t first_panel,
                              int64_t end_panel, const float* bias, float* y, int64_t y_stride);

struct KernelTable {
  Isa isa;
  MatmulKernel matmul_f32;
  MatmulKernel matmul_bf16;
  MatmulKernel matmul_f16;
  MatmulKernel matmul_i8;
  // out[j] = dot(q, keys row j) for j < count, keys row-major [count, d].
  void (*key_scores)(const float* q, const float* keys, int64_t count, int64_t d, float* out);
  // out[c] = Σ_j p[j] · v[j · d + c] for c < d, j < count (attention's probability-weighted values).
  void (*weighted_sum)(const float* p, const float* v, int64_t count, int64_t d, float* out);
  // x[i] = exp(x[i] − shift) for n values (−inf gives exactly 0); returns their sum.
  float (*exp_sum)(float* x, int64_t n, float shift);
  // Exact-erf GELU in place.
  void (*gelu)(float* x, int64_t n);
  // Runs `iterations` rounds of independent multiply-adds on registers; returns the flops done
  // (bf16: pair dot products where the ISA has them). Measures the machine's compute ceiling.
  double (*peak_flops)(int64_t iterations, bool bf16);
  // Sum of n floats read once, front to back: the memory bandwidth probe's inner loop.
  float (*stream_sum)(const float* data, int64_t n);
};

const KernelTable& scalar_kernels();
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();

// The table of the active ISA.
const KernelTable& kernels();

// The matmul kernel of `table` for weights of `dtype`.
MatmulKernel matmul_kernel(const KernelTable& table, DType dtype);

}  // namespace falcon::cpu
