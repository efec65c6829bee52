// Embedding gathers (16-bit, float32 and int8 tables), row gathers, bias + GELU, rounding to 16-bit
// floats, and the split of float16 models' GEMM inputs.
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kThreads = 256;

__global__ void embedding_kernel(const void* table, Element type, int64_t dim, const int32_t* ids, float* out) {
  const int64_t row = blockIdx.x;
  const int64_t source = int64_t(ids[row]) * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float value;
    if (type == Element::F32) {
      value = static_cast<const float*>(table)[source + c];
    } else if (type == Element::BF16) {
      value = bf16_bits_to_float(static_cast<const uint16_t*>(table)[source + c]);
    } else {
      value = half_bits_to_float(static_cast<const uint16_t*>(table)[source + c]);
    }
    out[row * dim + c] = value;
  }
}

// q · scale in float32, one rounding: the CPU's int8 WeightMatrix::get (its offset-by-128 bytes
// widen exactly to the same integer q).
__global__ void embedding_int8_kernel(const int8_t* q, const float* scales, int64_t dim, const int32_t* ids, float* out) {
  const int64_t row = blockIdx.x;
  const int64_t id = ids[row];
  const float scale = scales[id];
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) out[row * dim + c] = float(q[id * dim + c]) * scale;
}

__global__ void gather_rows_kernel(const float* x, int64_t dim, const int32_t* rows, float* out) {
  const int64_t row = blockIdx.x;
  const float* source = x + int64_t(rows[row]) * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) out[row * dim + c] = source[c];
}

__global__ void bias_gelu_kernel(float* x, int64_t count, int64_t cols, const float* bias) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) x[i] = gelu_erf(bias != nullptr ? x[i] + bias[i % cols] : x[i]);
}

__global__ void round_kernel(const float* x, int64_t count, Element type, uint16_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) out[i] = type == Element::BF16 ? float_to_bf16_bits(x[i]) : float_to_half_bits(x[i]);
}

constexpr int kWarps = kThreads / 32;

// One block per row: the row's largest finite magnitude, then its scaled float16 pair (kernels.h).
__global__ void __launch_bounds__(kThreads)
    split_f16_kernel(const float* x, int64_t k, uint16_t* high, uint16_t* low, float* row_unscale) {
  __shared__ SharedArray<float, kWarps> partials;
  const int64_t row = blockIdx.x;
  const float* in = x + row * k;
  const float infinity = __int_as_float(0x7f800000);
  float largest = 0.0f;
  for (int64_t c = threadIdx.x; c < k; c += kThreads) {
    const float magnitude = fabsf(in[c]);
    if (magnitude < infinity) largest = fmaxf(largest, magnitude);  // false for ±Infinity and NaN
  }
  largest = block_reduce(largest, true, partials);
  // largest lies in [2^(b - 127), 2^(b - 126)) for its biased exponent b (a subnormal's is taken as 1),
  // so largest · 2^(141 - b) lies in [2^14, 2^15); both 2^e and 2^-e stay normal float32 numbers.
  int e = 0;
  if (largest > 0.0f) {
    const int biased = __float_as_int(largest) >> 23;
    e = 141 - (biased > 1 ? biased : 1);
    if (e > 126) e = 126;
  }
  const float scale = __int_as_float((127 + e) << 23);
  if (threadIdx.x == 0) row_unscale[row] = __int_as_float((127 - e) << 23);
  for (int64_t c = threadIdx.x; c < k; c += kThreads) {
    const float scaled = in[c] * scale;
    const uint16_t high_bits = float_to_half_bits(scaled);
    const float rest = scaled - half_bits_to_float(high_bits);  // exact: high is scaled's nearest float16
    high[row * k + c] = high_bits;
    low[row * k + c] = fabsf(scaled) < infinity ? float_to_half_bits(rest) : uint16_t(0);
  }
}

}  // namespace

void embedding(const void* table, Element type, int64_t dim, const int32_t* ids, int64_t count, float* out, cudaStream_t stream) {
  require_sizes(dim > 0 && count >= 0, "embedding", "dim must be positive and count non-negative");
  require_sizes(type != Element::I8, "embedding", "int8 tables take embedding_int8, with their scales");
  if (count == 0) return;
  const auto kernel = &embedding_kernel;
  FALCON_LAUNCH("embedding", kernel, dim3(grid_blocks(count, 1, "embedding")), dim3(kThreads), stream, table, type, dim, ids, out);
}

void embedding_int8(const int8_t* q, const float* scales, int64_t dim, const int32_t* ids, int64_t count, float* out,
                    cudaStream_t stream) {
  require_sizes(dim > 0 && count >= 0, "embedding_int8", "dim must be positive and count non-negative");
  require_sizes(scales != nullptr, "embedding_int8", "int8 tables need their scales");
  if (count == 0) return;
  const auto kernel = &embedding_int8_kernel;
  FALCON_LAUNCH("embedding_int8", kernel, dim3(grid_blocks(count, 1, "embedding_int8")), dim3(kThreads), stream, q, scales, dim, ids,
                out);
}

void gather_rows(const float* x, int64_t dim, const int32_t* rows, int64_t count, float* out, cudaStream_t stream) {
  require_sizes(dim > 0 && count >= 0, "gather_rows", "dim must be positive and count non-negative");
  if (count == 0) return;
  const auto kernel = &gather_rows_kernel;
  FALCON_LAUNCH("gather_rows", kernel, dim3(grid_blocks(count, 1, "gather_rows")), dim3(kThreads), stream, x, dim, rows, out);
}

void bias_gelu(float* x, int64_t rows, int64_t cols, const float* bias, cudaStream_t stream) {
  require_sizes(rows >= 0 && cols > 0, "bias_gelu", "rows must be non-negative and cols positive");
  if (rows == 0) return;
  const auto kernel = &bias_gelu_kernel;
  FALCON_LAUNCH("bias_gelu", kernel, dim3(grid_blocks(rows * cols, kThreads, "bias_gelu")), dim3(kThreads), stream, x, rows * cols,
                cols, bias);
}

void round_to(const float* x, int64_t count, Element type, uint16_t* out, cudaStream_t stream) {
  require_sizes(count >= 0 && (type == Element::BF16 || type == Element::F16), "round_to",
                "count must be non-negative and the type bfloat16 or float16");
  if (count == 0) return;
  const auto kernel = &round_kernel;
  FALCON_LAUNCH("round_to", kernel, dim3(grid_blocks(count, kThreads, "round_to")), dim3(kThreads), stream, x, count, type, out);
}

void split_f16(const float* x, int64_t rows, int64_t k, uint16_t* high, uint16_t* low, float* row_unscale, cudaStream_t stream) {
  require_sizes(rows >= 0 && k > 0, "split_f16", "rows must be non-negative and k positive");
  if (rows == 0) return;
  const auto kernel = &split_f16_kernel;
  FALCON_LAUNCH("split_f16", kernel, dim3(grid_blocks(rows, 1, "split_f16")), dim3(kThreads), stream, x, k, high, low, row_unscale);
}

}  // namespace FALCON_CUDA_NS
