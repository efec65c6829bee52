// Attention over the engine's paged KV blocks: split-K for decode rows (and any row), tiled flash
// attention for prompts.
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr float kMasked = -INFINITY;

template <Element E>
__device__ __forceinline__ float widen(const void* base, int64_t i) {
  if (E == Element::F32) return static_cast<const float*>(base)[i];
  if (E == Element::BF16) return bf16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
  return half_bits_to_float(static_cast<const uint16_t*>(base)[i]);
}

struct AttentionArgs {
  const float* q;
  int64_t q_stride, heads, heads_per_kv, head_dim, splits;
  const float* slopes;
  float scale;
  PagedKv kv;
  AttentionRows layout;
  float* workspace;  // [rows][heads][splits][2 + head_dim]: max, Σ exp, Σ exp · v
  float* out;
};

// Block (split, head, row): keys [split · kAttentionSplitKeys, +kAttentionSplitKeys) of the row's visible ones.
template <Element E>
__global__ void __launch_bounds__(kThreads) split_attention_kernel(AttentionArgs a) {
  __shared__ SharedArray<float, kAttentionMaxHeadDim> query;
  __shared__ SharedArray<float, kAttentionSplitKeys> weights;
  __shared__ SharedArray<float, kWarps> partials;
  const int64_t split = blockIdx.x, head = blockIdx.y, row = blockIdx.z;
  const int64_t d = a.head_dim;
  const int64_t sequence = a.layout.row_sequence[row];
  const int64_t visible = int64_t(a.layout.row_slot[row]) + 1;
  const int64_t first = split * kAttentionSplitKeys;
  const int64_t count = visible - first < kAttentionSplitKeys ? visible - first : kAttentionSplitKeys;
  float* partial = a.workspace + ((row * a.heads + head) * a.splits + split) * (2 + d);
  if (count <= 0) {  // the whole block: past this row's keys
    if (threadIdx.x == 0) {
      partial[0] = kMasked;
      partial[1] = 0.0f;
    }
    return;
  }
  for (int64_t c = threadIdx.x; c < d; c += kThreads) query[int(c)] = a.q[row * a.q_stride + head * d + c];
  __syncthreads();
  const int64_t kv_head = head / a.heads_per_kv;
  const float slope = a.slopes != nullptr ? a.slopes[head] : 0.0f;
  const int32_t* table = a.layout.block_tables + sequence * a.layout.max_blocks;
  float local_max = kMasked;
  for (int64_t j = threadIdx.x; j < count; j += kThreads) {
    const int64_t key = first + j;
    const int64_t block = table[key / kKvTokens], slot = key % kKvTokens;
    float score = kMasked;
    if (a.kv.valid[block * kKvTokens + slot]) {
      const int64_t base = kv_head * a.kv.head_stride + block * a.kv.block_stride + slot;
      float dot = 0.0f;
      for (int64_t c = 0; c < d; ++c) dot += query[int(c)] * widen<E>(a.kv.keys, base + c * kKvTokens);
      score = (dot + slope * float(a.kv.positions[block * kKvTokens + slot])) * a.scale;
    }
    weights[int(j)] = score;
    local_max = fmaxf(local_max, score);
  }
  const float largest = block_reduce(local_max, true, partials);
  float local_sum = 0.0f;
  for (int64_t j = threadIdx.x; j < count; j += kThreads) {
    // Masked keys weigh exactly 0 (and a chunk with none valid stays all zeros).
    const float e = weights[int(j)] == kMasked ? 0.0f : expf(weights[int(j)] - largest);
    weights[int(j)] = e;
    local_sum += e;
  }
  const float total = block_reduce(local_sum, false, partials);  // its barriers also publish the weights
  for (int64_t c = threadIdx.x; c < d; c += kThreads) {
    float sum = 0.0f;
    for (int64_t j = 0; j < count; ++j) {
      const int64_t key = first + j;
      const int64_t block = table[key / kKvTokens], slot = key % kKvTokens;
      sum += weights[int(j)] * widen<E>(a.kv.values, kv_head * a.kv.head_stride + block * a.kv.block_stride + slot * d + c);
    }
    partial[2 + c] = sum;
  }
  if (threadIdx.x == 0) {
    partial[0] = largest;
    partial[1] = total;
  }
}

// Block (head, row): merges the row's splits, rescaling each to the largest maximum.
__global__ void __launch_bounds__(kThreads) merge_splits_kernel(AttentionArgs a) {
  const int64_t head = blockIdx.x, row = blockIdx.y;
  const int64_t d = a.head_dim;
  const float* partial = a.workspace + (row * a.heads + head) * a.splits * (2 + d);
  float largest = kMasked;
  for (int64_t s = 0; s < a.splits; ++s) largest = fmaxf(largest, partial[s * (2 + d)]);
  float* out = a.out + row * a.heads * d + head * d;
  if (largest == kMasked) {  // no valid key: a padded query; its output (never read) is zero, as on the CPU
    for (int64_t c = threadIdx.x; c < d; c += kThreads) out[c] = 0.0f;
    return;
  }
  float total = 0.0f;
  for (int64_t s = 0; s < a.splits; ++s) {
    const float m = partial[s * (2 + d)];
    if (m != kMasked) total += expf(m - largest) * partial[s * (2 + d) + 1];
  }
  const float inverse_total = 1.0f / total;
  for (int64_t c = threadIdx.x; c < d; c += kThreads) {
    float sum = 0.0f;
    for (int64_t s = 0; s < a.splits; ++s) {
      const float m = partial[s * (2 + d)];
      if (m != kMasked) sum += expf(m - largest) * partial[s * (2 + d) + 2 + c];
    }
    out[c] = sum * inverse_total;
  }
}

// Block (tile, head) of flash_attention_prefill.
struct FlashArgs {
  const float* q;
  int64_t q_stride, heads, heads_per_kv, head_dim;
  const float* slopes;
  float scale;
  PagedKv kv;
  AttentionTiles tiles;
  float* out;
};

template <Element E>
__global__ void __launch_bounds__(kThreads) flash_prefill_kernel(FlashArgs a) {
  constexpr int Q = int(kFlashQueries), K = int(kKvTokens), D = int(kFlashMaxHeadDim);
  __shared__ SharedArray<float, Q * D> queries;  // [q][c]
  __shared__ SharedArray<float, D * K> keys;     // [c][k], as the pool stores them
  __shared__ SharedArray<float, K * D> values;   // [k][c]
  __shared__ SharedArray<float, Q * D> output;   // [q][c], unnormalised
  __shared__ SharedArray<float, Q * K> scores;   // [q][k], then the block's weights
  __shared__ SharedArray<float, K> key_positions;
  __shared__ SharedArray<int, K> key_valid;
  __shared__ SharedArray<float, Q> running_max, running_sum, rescale;
  const int64_t tile = blockIdx.x, head = blockIdx.y;
  const int d = int(a.head_dim);
  const int count = a.tiles.count[tile];
  const int64_t first_row = a.tiles.first_row[tile], first_slot = a.tiles.first_slot[tile];
  const int32_t* table = a.tiles.block_tables + int64_t(a.tiles.sequence[tile]) * a.tiles.max_blocks;
  const int64_t kv_head = head / a.heads_per_kv;
  const float slope = a.slopes != nullptr ? a.slopes[head] : 0.0f;
  for (int e = int(threadIdx.x); e < count * d; e += kThreads) {
    queries[e] = a.q[(first_row + e / d) * a.q_stride + head * d + e % d];
    output[e] = 0.0f;
  }
  if (threadIdx.x < unsigned(Q)) {
    running_max[int(threadIdx.x)] = kMasked;
    running_sum[int(threadIdx.x)] = 0.0f;
  }
  const int64_t blocks = (first_slot + count - 1) / K + 1;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t block = table[b];
    const int64_t base = kv_head * a.kv.head_stride + block * a.kv.block_stride;
    for (int e = int(threadIdx.x); e < d * K; e += kThreads) {
      keys[e] = widen<E>(a.kv.keys, base + e);
      // A slot no query of the tile may see (past its last token, or padding) weighs 0, and its value
      // may be memory never written: 0 · NaN would poison the sum, so it is staged as 0.
      const int slot = e / d;
      const bool seen = b * K + slot < first_slot + count && a.kv.valid[block * K + slot];
      values[e] = seen ? widen<E>(a.kv.values, base + e) : 0.0f;
    }
    if (threadIdx.x < unsigned(K)) {
      key_valid[int(threadIdx.x)] = a.kv.valid[block * K + threadIdx.x];
      key_positions[int(threadIdx.x)] = float(a.kv.positions[block * K + threadIdx.x]);
    }
    __syncthreads();
    for (int e = int(threadIdx.x); e < Q * K; e += kThreads) {
      const int qi = e / K, k = e % K;
      float score = kMasked;
      if (qi < count && b * K + k <= first_slot + qi && key_valid[k]) {
        float dot = 0.0f;
        for (int c = 0; c < d; ++c) dot += queries[qi * d + c] * keys[c * K + k];
        score = (dot + slope * key_positions[k]) * a.scale;
      }
      scores[e] = score;
    }
    __syncthreads();
    if (threadIdx.x < unsigned(count)) {
      const int qi = int(threadIdx.x);
      float block_max = kMasked;
      for (int k = 0; k < K; ++k) block_max = fmaxf(block_max, scores[qi * K + k]);
      const float old_max = running_max[qi];
      const float new_max = fmaxf(old_max, block_max);
      if (new_max == kMasked) {  // nothing valid yet: weights 0, nothing to rescale
        for (int k = 0; k < K; ++k) scores[qi * K + k] = 0.0f;
        rescale[qi] = 1.0f;
      } else {
        const float factor = old_max == kMasked ? 0.0f : expf(old_max - new_max);
        float sum = running_sum[qi] * factor;
        for (int k = 0; k < K; ++k) {
          const float score = scores[qi * K + k];
          const float weight = score == kMasked ? 0.0f : expf(score - new_max);
          scores[qi * K + k] = weight;
          sum += weight;
        }
        running_max[qi] = new_max;
        running_sum[qi] = sum;
        rescale[qi] = factor;
      }
    }
    __syncthreads();
    for (int e = int(threadIdx.x); e < count * d; e += kThreads) {
      const int qi = e / d, c = e % d;
      float acc = output[e] * rescale[qi];
      for (int k = 0; k < K; ++k) acc += scores[qi * K + k] * values[k * d + c];
      output[e] = acc;
    }
    __syncthreads();  // before the next block's keys, values and scores overwrite these
  }
  for (int e = int(threadIdx.x); e < count * d; e += kThreads) {
    const int qi = e / d;
    const float total = running_sum[qi];
    // A query with no valid key (padding) gets zeros, as on the CPU.
    a.out[(first_row + qi) * a.heads * d + head * d + e % d] = total > 0.0f ? output[e] * (1.0f / total) : 0.0f;
  }
}

int64_t split_count(int64_t max_visible) { return (max_visible + kAttentionSplitKeys - 1) / kAttentionSplitKeys; }

}  // namespace

int64_t attention_workspace_floats(int64_t rows, int64_t heads, int64_t head_dim, int64_t max_visible) {
  return rows * heads * split_count(max_visible) * (2 + head_dim);
}

void paged_attention(const float* q, int64_t rows, int64_t q_stride, int64_t heads, int64_t kv_heads, int64_t head_dim,
                     const float* slopes, const PagedKv& kv, const AttentionRows& layout, int64_t max_visible, float* workspace,
                     float* out, cudaStream_t stream) {
  require_sizes(rows >= 0 && rows <= 65535 && heads > 0 && heads <= 65535 && kv_heads > 0 && heads % kv_heads == 0,
                "paged_attention", "rows up to 65535, heads a positive multiple of kv_heads");
  require_sizes(head_dim > 0 && head_dim <= kAttentionMaxHeadDim && heads * head_dim <= q_stride, "paged_attention",
                "head_dim in [1, 256] and the query heads inside the rows");
  require_sizes(max_visible > 0 && layout.max_blocks * kKvTokens >= max_visible, "paged_attention",
                "max_visible must be positive and within the block tables");
  require_sizes(kv.type != Element::I8, "paged_attention", "the pool holds float32, bfloat16 or float16");
  if (rows == 0) return;
  AttentionArgs args{q, q_stride, heads, heads / kv_heads, head_dim, split_count(max_visible), slopes,
                     float(1.0 / std::sqrt(double(head_dim))), kv, layout, workspace, out};
  const dim3 split_grid(unsigned(args.splits), unsigned(heads), unsigned(rows));
  if (kv.type == Element::F32) {
    const auto kernel = &split_attention_kernel<Element::F32>;
    FALCON_LAUNCH("paged_attention_f32", kernel, split_grid, dim3(kThreads), stream, args);
  } else if (kv.type == Element::BF16) {
    const auto kernel = &split_attention_kernel<Element::BF16>;
    FALCON_LAUNCH("paged_attention_bf16", kernel, split_grid, dim3(kThreads), stream, args);
  } else {
    const auto kernel = &split_attention_kernel<Element::F16>;
    FALCON_LAUNCH("paged_attention_f16", kernel, split_grid, dim3(kThreads), stream, args);
  }
  const auto merge = &merge_splits_kernel;
  FALCON_LAUNCH("merge_attention_splits", merge, dim3(unsigned(heads), unsigned(rows)), dim3(kThreads), stream, args);
}

void flash_attention_prefill(const float* q, int64_t q_stride, int64_t heads, int64_t kv_heads, int64_t head_dim,
                             const float* slopes, const PagedKv& kv, const AttentionTiles& tiles, float* out, cudaStream_t stream) {
  require_sizes(heads > 0 && heads <= 65535 && kv_heads > 0 && heads % kv_heads == 0, "flash_attention_prefill",
                "heads up to 65535, a positive multiple of kv_heads");
  require_sizes(head_dim > 0 && head_dim <= kFlashMaxHeadDim && heads * head_dim <= q_stride, "flash_attention_prefill",
                "head_dim in [1, 128] and the query heads inside the rows");
  require_sizes(tiles.tiles >= 0 && tiles.tiles <= 2147483647, "flash_attention_prefill", "too many tiles");
  require_sizes(kv.type != Element::I8, "flash_attention_prefill", "the pool holds float32, bfloat16 or float16");
  if (tiles.tiles == 0) return;
  FlashArgs args{q, q_stride, heads, heads / kv_heads, head_dim, slopes, float(1.0 / std::sqrt(double(head_dim))), kv, tiles, out};
  const dim3 grid(unsigned(tiles.tiles), unsigned(heads));
  if (kv.type == Element::F32) {
    const auto kernel = &flash_prefill_kernel<Element::F32>;
    FALCON_LAUNCH("flash_attention_prefill_f32", kernel, grid, dim3(kThreads), stream, args);
  } else if (kv.type == Element::BF16) {
    const auto kernel = &flash_prefill_kernel<Element::BF16>;
    FALCON_LAUNCH("flash_attention_prefill_bf16", kernel, grid, dim3(kThreads), stream, args);
  } else {
    const auto kernel = &flash_prefill_kernel<Element::F16>;
    FALCON_LAUNCH("flash_attention_prefill_f16", kernel, grid, dim3(kThreads), stream, args);
  }
}

}  // namespace FALCON_CUDA_NS
