// Residual add fused with layer norm: one block per row.
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// The block's sum of `value`; every thread gets it. `partials` is the block's scratch.
__device__ double block_sum(double value, SharedArray<double, kWarps>& partials) {
  value = warp_sum(value);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  if (lane == 0) partials[warp] = value;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kWarps; ++w) total += partials[w];
  __syncthreads();  // before the scratch is reused
  return total;
}

__global__ void __launch_bounds__(kThreads)
    add_layer_norm_kernel(float* residual, const float* add, int64_t dim, const float* gamma, const float* beta, float epsilon,
                          float* out) {
  __shared__ SharedArray<double, kWarps> partials;
  float* h = residual + int64_t(blockIdx.x) * dim;
  const float* a = add != nullptr ? add + int64_t(blockIdx.x) * dim : nullptr;
  double sum = 0.0;
  for (int64_t c = threadIdx.x; c < dim; c += kThreads) {
    if (a != nullptr) h[c] = h[c] + a[c];
    sum += h[c];
  }
  const double mean_d = block_sum(sum, partials) / double(dim);
  double squares = 0.0;
  for (int64_t c = threadIdx.x; c < dim; c += kThreads) {
    const double centred = h[c] - mean_d;
    squares += centred * centred;
  }
  const double variance = block_sum(squares, partials) / double(dim);
  const float mean = float(mean_d);
  const float inverse_std = float(1.0 / sqrt(variance + double(epsilon)));
  float* y = out + int64_t(blockIdx.x) * dim;
  for (int64_t c = threadIdx.x; c < dim; c += kThreads) y[c] = (h[c] - mean) * inverse_std * gamma[c] + beta[c];
}

}  // namespace

void add_layer_norm(float* residual, const float* add, int64_t rows, int64_t dim, const float* gamma, const float* beta,
                    float epsilon, float* out, cudaStream_t stream) {
  require_sizes(rows >= 0 && dim > 0, "add_layer_norm", "rows must be non-negative and dim positive");
  if (rows == 0) return;
  const auto kernel = &add_layer_norm_kernel;
  FALCON_LAUNCH("add_layer_norm", kernel, dim3(grid_blocks(rows, 1, "add_layer_norm")), dim3(kThreads), stream, residual, add, dim,
                gamma, beta, epsilon, out);
}

}  // namespace FALCON_CUDA_NS
