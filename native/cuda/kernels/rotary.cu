// Rotary position tables (in double, as the CPU computes them) and the NeoX rotate-half rotation.
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kThreads = 128;

__global__ void rotary_tables_kernel(const int32_t* positions, const double* bases, const double* position_scales, int64_t half,
                                     float* cos_out, float* sin_out) {
  const int64_t row = blockIdx.x;
  const double dim = double(2 * half);
  const double position = double(positions[row]) * position_scales[row];
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const double angle = position / pow(bases[row], double(2 * i) / dim);
    cos_out[row * half + i] = float(cos(angle));
    sin_out[row * half + i] = float(sin(angle));
  }
}

__global__ void apply_rotary_kernel(float* x, int64_t row_stride, int64_t first_head, int64_t heads, int64_t head_dim,
                                    const float* cos_table, const float* sin_table) {
  const int64_t row = blockIdx.x;
  const int64_t half = head_dim / 2;
  const float* cos_row = cos_table + row * half;
  const float* sin_row = sin_table + row * half;
  for (int64_t e = threadIdx.x; e < heads * half; e += blockDim.x) {
    const int64_t h = first_head + e / half, i = e % half;
    float* v = x + row * row_stride + h * head_dim;
    const float first = v[i];
    const float second = v[i + half];
    v[i] = first * cos_row[i] - second * sin_row[i];
    v[i + half] = second * cos_row[i] + first * sin_row[i];
  }
}

}  // namespace

void rotary_tables(const int32_t* positions, const double* bases, const double* position_scales, int64_t rows,
                   int64_t head_dim, float* cos_out, float* sin_out, cudaStream_t stream) {
  require_sizes(rows >= 0 && head_dim > 0 && head_dim % 2 == 0, "rotary_tables", "head_dim must be positive and even");
  if (rows == 0) return;
  const auto kernel = &rotary_tables_kernel;
  FALCON_LAUNCH("rotary_tables", kernel, dim3(grid_blocks(rows, 1, "rotary_tables")), dim3(kThreads), stream, positions, bases,
                position_scales, head_dim / 2, cos_out, sin_out);
}

void apply_rotary(float* x, int64_t rows, int64_t row_stride, int64_t first_head, int64_t heads, int64_t head_dim,
                  const float* cos_table, const float* sin_table, cudaStream_t stream) {
  require_sizes(rows >= 0 && head_dim > 0 && head_dim % 2 == 0 && first_head >= 0 && heads >= 0 &&
                    (first_head + heads) * head_dim <= row_stride,
                "apply_rotary", "the heads must lie inside the rows and head_dim be positive and even");
  if (rows == 0 || heads == 0) return;
  const auto kernel = &apply_rotary_kernel;
  FALCON_LAUNCH("apply_rotary", kernel, dim3(grid_blocks(rows, 1, "apply_rotary")), dim3(kThreads), stream, x, row_stride, first_head,
                heads, head_dim, cos_table, sin_table);
}

}  // namespace FALCON_CUDA_NS
