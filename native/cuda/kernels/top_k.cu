// Each sampled row's best candidates, so a step copies back ids and values instead of a vocabulary of
// logits: one block per row, k passes of a block-wide arg-best over the elements ranked after the
// previous pass's pick. k reads of the row (k ≤ 64) cost less than the head GEMM that wrote it, and the
// ranking is exact: no threshold, no approximate selection, ties and NaN ordered as the sampler orders them.
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// True when (va, a) ranks before (vb, b) in core/sampler.h rank_top_k's order: larger value first, ties
// to the lower id, NaN after every number (NaN ids in id order). Id -1 is "none", after everything.
// `x != x` is the NaN test both nvcc and the host compiler keep.
__device__ __forceinline__ bool ranks_before(float va, int32_t a, float vb, int32_t b) {
  if (b < 0) return a >= 0;
  if (a < 0) return false;
  const bool a_nan = va != va, b_nan = vb != vb;
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && va != vb) return va > vb;
  return a < b;
}

__global__ void __launch_bounds__(kThreads)
    top_k_kernel(const float* logits, int64_t vocab, const int32_t* rows, const int32_t* counts, const int32_t* allowed, int64_t max_k,
                 int32_t* ids_out, float* values_out) {
  __shared__ SharedArray<float, kWarps> warp_values;
  __shared__ SharedArray<int32_t, kWarps> warp_ids;
  const int64_t i = blockIdx.x;
  // The launcher's preconditions, clamped so that a wrong table reads nothing outside the row.
  const int64_t n = allowed[i] < vocab ? int64_t(allowed[i]) : vocab;
  int64_t k = counts[i] < max_k ? int64_t(counts[i]) : max_k;
  if (k > n) k = n;
  const float* row = logits + int64_t(rows[i]) * vocab;
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  float previous_value = 0.0f;
  int32_t previous_id = -1;
  for (int64_t pass = 0; pass < k; ++pass) {
    float best_value = 0.0f;
    int32_t best_id = -1;
    for (int64_t id = threadIdx.x; id < n; id += kThreads) {
      const float value = row[id];
      const bool after_previous = previous_id < 0 || ranks_before(previous_value, previous_id, value, int32_t(id));
      if (after_previous && ranks_before(value, int32_t(id), best_value, best_id)) {
        best_value = value;
        best_id = int32_t(id);
      }
    }
    // The order is total, so every lane of the butterfly ends with the same best.
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float other_value = __shfl_xor_sync(kFullMask, best_value, offset);
      const int32_t other_id = __shfl_xor_sync(kFullMask, best_id, offset);
      if (ranks_before(other_value, other_id, best_value, best_id)) {
        best_value = other_value;
        best_id = other_id;
      }
    }
    if (lane == 0) {
      warp_values[warp] = best_value;
      warp_ids[warp] = best_id;
    }
    __syncthreads();
    best_value = warp_values[0];
    best_id = warp_ids[0];
    for (int w = 1; w < kWarps; ++w) {
      if (ranks_before(warp_values[w], warp_ids[w], best_value, best_id)) {
        best_value = warp_values[w];
        best_id = warp_ids[w];
      }
    }
    __syncthreads();  // before the next pass overwrites the warps' picks
    if (threadIdx.x == 0) {
      ids_out[i * max_k + pass] = best_id;
      values_out[i * max_k + pass] = best_value;
    }
    previous_value = best_value;
    previous_id = best_id;
  }
}

}  // namespace

void top_k(const float* logits, int64_t vocab, const int32_t* rows, const int32_t* counts, const int32_t* allowed, int64_t count,
           int64_t max_k, int32_t* ids_out, float* values_out, cudaStream_t stream) {
  require_sizes(vocab > 0 && vocab <= 2147483647, "top_k", "vocab must be in [1, 2^31 - 1]");
  require_sizes(count >= 0, "top_k", "the row count must be non-negative");
  require_sizes(max_k >= 1 && max_k <= kTopKMax, "top_k", "max_k must be in [1, kTopKMax]");
  if (count == 0) return;
  const auto kernel = &top_k_kernel;
  FALCON_LAUNCH("top_k", kernel, dim3(grid_blocks(count, 1, "top_k")), dim3(kThreads), stream, logits, vocab, rows, counts, allowed, max_k,
                ids_out, values_out);
}

}  // namespace FALCON_CUDA_NS
