#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../../core/thread_pool.h"
#include "../kernels/kernels.h"
#include "../ops.h"

namespace falcon::cpu {

namespace {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

// Up to kAttentionQueries queries that read the same keys: consecutive tokens of one head, or, in a
// decode step of a model whose query heads share KV heads, the heads of one KV head for one token.
struct QueryGroup {
  const float* q;  // query g at q + g · q_stride
  int64_t q_stride;
  float* out;  // output g at out + g · out_stride
  int64_t out_stride;
  int64_t queries;
  int64_t first_visible;  // query g sees keys [0, first_visible + g · visible_step)
  int64_t visible_step;
  const float* slopes;  // ALiBi slope of query g: slopes[g · slope_step]; null without ALiBi
  int64_t slope_step;
};

// A prompt of at least this many tokens scores its keys in blocks (kernels.h): transposing a head's keys
// costs about as much as scoring one group of queries against them.
constexpr int64_t kBlockedKeysMinLength = 4 * kAttentionQueries;

// Copies keys [0, count) of one head into blocks of kKeyBlock, the last one padded with zeros.
void block_keys(const float* keys, int64_t count, int64_t d, TrackedVector<float>& blocks) {
  const int64_t padded = (count + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  if (blocks.size() < size_t(padded * d)) blocks.resize(size_t(padded * d));
  for (int64_t j = 0; j < padded; ++j) {
    float* slot = blocks.data() + j / kKeyBlock * d * kKeyBlock + j % kKeyBlock;
    for (int64_t c = 0; c < d; ++c) slot[c * kKeyBlock] = j < count ? keys[j * d + c] : 0.0f;
  }
}

// Scores are a few vectors of the keys seen so far, never a [queries, keys] matrix, so memory stays
// linear in the sequence length, and each cached key and value row is read once per group. Keys are
// row-major, or in blocks when `key_blocks` is given.
void attend(const KernelTable& table, const QueryGroup& group, const SequenceKv& seq, const float* keys,
            const float* key_blocks, const float* values, int64_t d, float scale, TrackedVector<float>& scores) {
  const int64_t key_count = group.first_visible + (group.queries - 1) * group.visible_step;
  if (scores.size() < size_t(kAttentionQueries * key_count)) scores.resize(size_t(kAttentionQueries * key_count));
  if (key_blocks != nullptr) {
    table.key_scores_blocked(group.q, group.q_stride, group.queries, key_blocks, key_count, d, scores.data(), key_count);
  } else {
    table.key_scores(group.q, group.q_stride, group.queries, keys, key_count, d, scores.data(), key_count);
  }
  float inverse_totals[kAttentionQueries];
  for (int64_t g = 0; g < group.queries; ++g) {
    float* query_scores = scores.data() + g * key_count;
    const int64_t visible = group.first_visible + g * group.visible_step;
    const float slope = group.slopes != nullptr ? group.slopes[g * group.slope_step] : 0.0f;
    const float max_score = table.mask_scores(query_scores, seq.valid.data(), seq.position.data(), visible, slope, scale);
    std::fill(query_scores + visible, query_scores + key_count, kMasked);
    if (max_score == kMasked) {  // no valid key: a padded query; its output (never read) is zero
      std::fill(query_scores, query_scores + key_count, 0.0f);
      inverse_totals[g] = 0.0f;
      continue;
    }
    inverse_totals[g] = 1.0f / table.exp_sum(query_scores, key_count, max_score);
  }
  table.weighted_sum(scores.data(), key_count, group.queries, values, key_count, d, group.out, group.out_stride);
  for (int64_t g = 0; g < group.queries; ++g) {
    for (int64_t c = 0; c < d; ++c) group.out[g * group.out_stride + c] *= inverse_totals[g];
  }
}

}  // namespace

void attention(const ModelConfig& config, int64_t layer, const AttentionBatch& batch, const float* qkv,
               int64_t qkv_cols, const std::vector<float>& alibi_slopes, float* out) {
  const KernelTable& table = kernels();
  const int64_t H = config.num_heads;
  const int64_t Hkv = config.num_kv_heads;
  const int64_t d = config.head_dim();
  const int64_t heads_per_kv = H / Hkv;
  const float scale = float(1.0 / std::sqrt(double(d)));
  const float* slopes = alibi_slopes.empty() ? nullptr : alibi_slopes.data();
  // Work items: one per (row, query head), whose tokens go in groups; or, for one-token steps of
  // models with shared KV heads, one per (row, KV head, group of its query heads).
  const bool group_heads = batch.length == 1 && heads_per_kv > 1;
  const int64_t head_groups = (heads_per_kv + kAttentionQueries - 1) / kAttentionQueries;
  const int64_t items = group_heads ? batch.batch * Hkv * head_groups : batch.batch * H;

  current_thread_pool()->parallel_for(items, 1, [&](int64_t first, int64_t end) {
    // This worker's own score rows and key blocks, kept for later calls unless a long context grew them.
    thread_local TrackedVector<float> scores = thread_scratch<float>(), key_blocks = thread_scratch<float>();
    // Query heads that share a KV head are consecutive items: a chunk blocks each KV head's keys once.
    const float* blocked_keys = nullptr;
    for (int64_t item = first; item < end; ++item) {
      if (group_heads) {
        const int64_t b = item / (Hkv * head_groups);
        const int64_t kv_head = item / head_groups % Hkv;
        const int64_t first_head = kv_head * heads_per_kv + item % head_groups * kAttentionQueries;
        const SequenceKv& seq = *(*batch.sequences)[size_t(b)];
        const int64_t start = (*batch.start)[size_t(b)];
        const QueryGroup group{qkv + b * qkv_cols + first_head * d, d, out + b * H * d + first_head * d, d,
                               std::min(kAttentionQueries, (kv_head + 1) * heads_per_kv - first_head), start + 1, 0,
                               slopes == nullptr ? nullptr : slopes + first_head, 1};
        attend(table, group, seq, seq.keys(layer, kv_head), nullptr, seq.values(layer, kv_head), d, scale, scores);
        continue;
      }
      const int64_t b = item / H;
      const int64_t h = item % H;
      const SequenceKv& seq = *(*batch.sequences)[size_t(b)];
      const int64_t start = (*batch.start)[size_t(b)];
      const float* keys = seq.keys(layer, h / heads_per_kv);
      const bool blocked = batch.length >= kBlockedKeysMinLength;
      if (blocked && keys != blocked_keys) {
        block_keys(keys, start + batch.length, d, key_blocks);
        blocked_keys = keys;
      }
      for (int64_t i = 0; i < batch.length; i += kAttentionQueries) {
        const int64_t row = b * batch.length + i;
        const QueryGroup group{qkv + row * qkv_cols + h * d, qkv_cols, out + row * H * d + h * d, H * d,
                               std::min(kAttentionQueries, batch.length - i), start + i + 1, 1,
                               slopes == nullptr ? nullptr : slopes + h, 0};
        attend(table, group, seq, keys, blocked ? key_blocks.data() : nullptr, seq.values(layer, h / heads_per_kv), d, scale,
               scores);
      }
    }
    release_if_large(scores);
    release_if_large(key_blocks);
  });
}

}  // namespace falcon::cpu
