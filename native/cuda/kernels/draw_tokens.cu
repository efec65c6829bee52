// The token of each row whose sampler draws from the softmax over the whole row (temperature, random),
// drawn on the device so that a step copies back one id instead of a vocabulary of logits, and the
// host never computes a vocabulary of exps per token. It is the host sampler's draw exactly
// (SequenceSampler::sample_drawn): the same weights (softmax_draw.h, V8's exp in double precision;
// this file is compiled with --fmad=false) summed in the same order, id by id, so the same token for
// the same logits and draw.
//
// One block per row. The sum is sequential by definition (floating-point addition does not
// associate), so one lane runs it while the other warps compute the next chunk's weights; the running
// sum at each chunk's end is kept, and the chunk where the draw lands is summed again to find the id.
#include "../../core/softmax_draw.h"
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 1024;  // ids per chunk of weights
static_assert(kDrawMaxIds % kChunk == 0, "whole chunks");
constexpr int kMaxChunks = int(kDrawMaxIds / kChunk);

__global__ void __launch_bounds__(kThreads)
    draw_tokens_kernel(const float* logits, int64_t vocab, const int32_t* rows, const int32_t* allowed, const double* temperatures,
                       const double* draws, int32_t* tokens_out) {
  __shared__ SharedArray<double, 2 * kChunk> weights;  // two chunks: one summed while the next is computed
  __shared__ SharedArray<double, kMaxChunks> chunk_sums;  // the running sum at each chunk's end
  __shared__ SharedArray<float, kWarps> warp_max;
  __shared__ SharedArray<int32_t, kWarps> warp_last;
  __shared__ SharedArray<int32_t, 1> landing_chunk;
  const int64_t i = blockIdx.x;
  // The launcher's preconditions, clamped so that a wrong table reads nothing outside the row.
  int64_t n = allowed[i];
  if (n > vocab) n = vocab;
  if (n > kDrawMaxIds) n = kDrawMaxIds;
  if (n < 1) n = 1;
  const float* row = logits + int64_t(rows[i]) * vocab;
  const double temperature = temperatures[i];
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;

  // The largest logit; NaN never compares larger, so it counts as -Infinity.
  float max = -__int_as_float(0x7f800000);
  for (int64_t id = threadIdx.x; id < n; id += kThreads) {
    const float value = row[id];
    if (value > max) max = value;
  }
  max = block_reduce(max, true, warp_max);
  if (max == -__int_as_float(0x7f800000)) {
    // No logit above -Infinity: the sampler gives id 0 all the mass.
    if (threadIdx.x == 0) tokens_out[i] = 0;
    return;
  }

  const int64_t chunks = (n + kChunk - 1) / kChunk;
  // Chunk `c`'s weights into weights[(c % 2) · kChunk ..] by the threads from `first_thread` on; each
  // thread keeps the largest id it saw with a positive weight (pick's fallback).
  int32_t last_positive = -1;
  const auto compute_chunk = [&](int64_t c, int first_thread) {
    const int64_t begin = c * kChunk;
    const int64_t end = begin + kChunk < n ? begin + kChunk : n;
    const int base = int(c % 2) * kChunk;
    for (int64_t id = begin + int(threadIdx.x) - first_thread; id < end; id += kThreads - first_thread) {
      const double weight = falcon::softmax_draw::draw_weight(row[id], max, temperature);
      weights[base + int(id - begin)] = weight;
      if (weight > 0) last_positive = int32_t(id);
    }
  };
  // Lane 0 of warp 0 adds chunk `c`'s weights to `running` in id order; with `target`, returns the
  // first id whose running sum passes it (pick's test), else -1.
  const auto sum_chunk = [&](int64_t c, double& running, bool find, double target) -> int32_t {
    const int64_t begin = c * kChunk;
    const int count = int((begin + kChunk < n ? begin + kChunk : n) - begin);
    const int base = int(c % 2) * kChunk;
    for (int j = 0; j < count; ++j) {
      running += weights[base + j];
      if (find && target < running) return int32_t(begin + j);
    }
    return -1;
  };

  compute_chunk(0, 0);
  __syncthreads();
  double running = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    if (warp == 0) {
      if (lane == 0) {
        sum_chunk(c, running, false, 0.0);
        chunk_sums[int(c)] = running;
      }
    } else if (c + 1 < chunks) {
      compute_chunk(c + 1, 32);
    }
    __syncthreads();
  }

  for (int offset = 16; offset > 0; offset >>= 1) {
    const int32_t other = __shfl_xor_sync(kFullMask, last_positive, offset);
    if (other > last_positive) last_positive = other;
  }
  if (lane == 0) warp_last[warp] = last_positive;
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) last_positive = warp_last[w] > last_positive ? warp_last[w] : last_positive;

  // pick(): the first id whose running sum passes u · total, found in the chunk whose end passes it.
  const double target = draws[i] * running;  // running: the total, on lane 0 of warp 0
  if (threadIdx.x == 0) {
    int32_t landing = -1;
    for (int64_t c = 0; c < chunks && landing < 0; ++c) {
      if (target < chunk_sums[int(c)]) landing = int32_t(c);
    }
    landing_chunk[0] = landing;
  }
  __syncthreads();
  const int32_t landing = landing_chunk[0];
  int32_t token = last_positive;  // no running sum passes the target: pick's last positive weight
  if (landing >= 0) {
    compute_chunk(landing, 0);
    __syncthreads();
    if (threadIdx.x == 0) {
      double again = landing == 0 ? 0.0 : chunk_sums[landing - 1];
      const int32_t found = sum_chunk(landing, again, true, target);
      if (found >= 0) token = found;
    }
  }
  if (threadIdx.x == 0) tokens_out[i] = token < 0 ? 0 : token;
}

}  // namespace

void draw_tokens(const float* logits, int64_t vocab, const int32_t* rows, const int32_t* allowed, const double* temperatures,
                 const double* draws, int64_t count, int32_t* tokens_out, cudaStream_t stream) {
  require_sizes(vocab > 0 && vocab <= 2147483647, "draw_tokens", "vocab must be in [1, 2^31 - 1]");
  require_sizes(count >= 0, "draw_tokens", "the row count must be non-negative");
  if (count == 0) return;
  const auto kernel = &draw_tokens_kernel;
  FALCON_LAUNCH("draw_tokens", kernel, dim3(grid_blocks(count, 1, "draw_tokens")), dim3(kThreads), stream, logits, vocab, rows, allowed,
                temperatures, draws, tokens_out);
}

}  // namespace FALCON_CUDA_NS
