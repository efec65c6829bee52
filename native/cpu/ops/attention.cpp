#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../../core/thread_pool.h"
#include "../kernels/kernels.h"
#include "../ops.h"

namespace falcon::cpu {

static_assert(kKeyBlock == kKvBlockTokens, "the kernels read the pool's blocks as they are");

namespace {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

// A prompt's queries for one head are split into items of this many tokens, so that one long prompt
// in a step shares out across threads like many short ones.
constexpr int64_t kItemTokens = 8 * kAttentionQueries;

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

// Scores are a few vectors of the keys seen so far, never a [queries, keys] matrix, so memory stays
// linear in the sequence length, and each cached key and value is read once per group.
// Every query's softmax runs over exactly its own visible keys: its result is the same whichever
// queries share its group (and so however the prompt was chunked, or the step batched). Scores of
// keys past a query's own (those of later tokens in the group) become probabilities of exactly 0,
// which leave the value sums bit for bit unchanged.
void attend(const KernelTable& table, const AttentionKernels& kv, const QueryGroup& group, const PagedSequence& seq,
            const void* const* key_blocks, const void* const* value_blocks, int64_t d, float scale, TrackedVector<float>& scores) {
  const int64_t key_count = group.first_visible + (group.queries - 1) * group.visible_step;
  if (scores.size() < size_t(kAttentionQueries * key_count)) scores.resize(size_t(kAttentionQueries * key_count));
  kv.key_scores_blocked(group.q, group.q_stride, group.queries, key_blocks, key_count, d, scores.data(), key_count);
  float inverse_totals[kAttentionQueries];
  for (int64_t g = 0; g < group.queries; ++g) {
    float* query_scores = scores.data() + g * key_count;
    const int64_t visible = group.first_visible + g * group.visible_step;
    const float slope = group.slopes != nullptr ? group.slopes[g * group.slope_step] : 0.0f;
    const float max_score = table.mask_scores(query_scores, seq.valid, seq.positions, visible, slope, scale);
    std::fill(query_scores + visible, query_scores + key_count, 0.0f);
    if (max_score == kMasked) {  // no valid key: a padded query; its output (never read) is zero
      std::fill(query_scores, query_scores + visible, 0.0f);
      inverse_totals[g] = 0.0f;
      continue;
    }
    inverse_totals[g] = 1.0f / table.exp_sum(query_scores, visible, max_score);
  }
  kv.weighted_sum(scores.data(), key_count, group.queries, value_blocks, key_count, d, group.out, group.out_stride);
  for (int64_t g = 0; g < group.queries; ++g) {
    for (int64_t c = 0; c < d; ++c) group.out[g * group.out_stride + c] *= inverse_totals[g];
  }
}

}  // namespace

void plan_attention(const ModelConfig& config, StepPlan& plan) {
  const int64_t H = config.num_heads;
  const int64_t Hkv = config.num_kv_heads;
  const int64_t heads_per_kv = H / Hkv;
  plan.attention_items.clear();
  plan.output_attention_items.clear();
  for (int64_t s = 0; s < int64_t(plan.sequences.size()); ++s) {
    const PagedSequence& seq = plan.sequences[size_t(s)];
    if (seq.count == 1 && heads_per_kv > 1) {
      // A decode token's query heads that share a KV head read its keys and values once, together.
      for (int64_t kv_head = 0; kv_head < Hkv; ++kv_head) {
        for (int64_t first = 0; first < heads_per_kv; first += kAttentionQueries) {
          const AttentionItem item{s, kv_head * heads_per_kv + first, std::min(kAttentionQueries, heads_per_kv - first), 0, 1};
          plan.attention_items.push_back(item);
          if (plan.row_is_output[size_t(seq.first_row)]) plan.output_attention_items.push_back(item);
        }
      }
      continue;
    }
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t first = 0; first < seq.count; first += kItemTokens) {
        plan.attention_items.push_back({s, h, 1, first, std::min(kItemTokens, seq.count - first)});
      }
      for (int64_t t = 0; t < seq.count; ++t) {
        if (plan.row_is_output[size_t(seq.first_row + t)]) plan.output_attention_items.push_back({s, h, 1, t, 1});
      }
    }
  }
}

void attention(const ModelConfig& config, int64_t layer, const KvPool& pool, const StepPlan& plan,
               const TrackedVector<AttentionItem>& items, const float* qkv, int64_t qkv_cols,
               const std::vector<float>& alibi_slopes, float* out) {
  const KernelTable& table = kernels();
  const AttentionKernels& kv = attention_kernels(table, pool.dtype());
  const int64_t H = config.num_heads;
  const int64_t d = config.head_dim();
  const int64_t heads_per_kv = H / config.num_kv_heads;
  const float scale = float(1.0 / std::sqrt(double(d)));
  const float* slopes = alibi_slopes.empty() ? nullptr : alibi_slopes.data();

  current_thread_pool()->parallel_for(int64_t(items.size()), 1, [&](int64_t first, int64_t end) {
    // This worker's own score rows and block lists, kept for later calls unless a long context grew them.
    thread_local TrackedVector<float> scores = thread_scratch<float>();
    thread_local TrackedVector<const void*> blocks = thread_scratch<const void*>();
    // Consecutive items often read the same sequence's KV head: its block lists are gathered once.
    int64_t listed_sequence = -1, listed_kv_head = -1, listed_blocks = 0;
    for (int64_t index = first; index < end; ++index) {
      const AttentionItem& item = items[size_t(index)];
      const PagedSequence& seq = plan.sequences[size_t(item.sequence)];
      const int64_t kv_head = item.head / heads_per_kv;
      const int64_t needed = (seq.start + item.first_token + item.tokens - 1) / kKeyBlock + 1;
      if (item.sequence != listed_sequence || kv_head != listed_kv_head || needed > listed_blocks) {
        if (blocks.size() < size_t(2 * needed)) blocks.resize(size_t(2 * needed));
        for (int64_t k = 0; k < needed; ++k) {
          blocks[size_t(k)] = pool.keys(seq.block_table[k], layer, kv_head);
          blocks[size_t(needed + k)] = pool.values(seq.block_table[k], layer, kv_head);
        }
        listed_sequence = item.sequence;
        listed_kv_head = kv_head;
        listed_blocks = needed;
      }
      const void* const* key_blocks = blocks.data();
      const void* const* value_blocks = blocks.data() + listed_blocks;
      if (seq.count == 1 && heads_per_kv > 1) {  // plan_attention's decode groups
        const int64_t row = seq.first_row;
        const QueryGroup group{qkv + row * qkv_cols + item.head * d, d, out + row * H * d + item.head * d, d, item.heads,
                               seq.start + 1, 0, slopes == nullptr ? nullptr : slopes + item.head, 1};
        attend(table, kv, group, seq, key_blocks, value_blocks, d, scale, scores);
        continue;
      }
      for (int64_t i = item.first_token; i < item.first_token + item.tokens; i += kAttentionQueries) {
        const int64_t row = seq.first_row + i;
        const QueryGroup group{qkv + row * qkv_cols + item.head * d, qkv_cols, out + row * H * d + item.head * d, H * d,
                               std::min(kAttentionQueries, item.first_token + item.tokens - i), seq.start + i + 1, 1,
                               slopes == nullptr ? nullptr : slopes + item.head, 0};
        attend(table, kv, group, seq, key_blocks, value_blocks, d, scale, scores);
      }
    }
    release_if_large(scores);
    release_if_large(blocks);
  });
}

}  // namespace falcon::cpu
