#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../../core/thread_pool.h"
#include "../kernels/kernels.h"
#include "../ops.h"

namespace falcon::cpu {

// Groups of up to kAttentionQueries query rows of one head against all the keys the group sees:
// scores are a few vectors of the keys seen so far, never a [queries, keys] matrix, so memory stays
// linear in the sequence length, and each cached key and value row is read once per group.
void attention(const ModelConfig& config, int64_t layer, const AttentionBatch& batch, const float* qkv,
               int64_t qkv_cols, const std::vector<float>& alibi_slopes, float* out) {
  const KernelTable& table = kernels();
  const int64_t H = config.num_heads;
  const int64_t d = config.head_dim();
  const int64_t heads_per_kv = H / config.num_kv_heads;
  const float scale = float(1.0 / std::sqrt(double(d)));
  const bool use_alibi = !alibi_slopes.empty();
  constexpr float kMasked = -std::numeric_limits<float>::infinity();

  global_thread_pool().parallel_for(batch.batch * H, 1, [&](int64_t first, int64_t end) {
    // This worker's own score rows, kept for later calls.
    thread_local std::vector<float> scores;
    for (int64_t item = first; item < end; ++item) {
      const int64_t b = item / H;
      const int64_t h = item % H;
      const SequenceKv& seq = *(*batch.sequences)[size_t(b)];
      const int64_t start = (*batch.start)[size_t(b)];
      const float* keys = seq.keys(layer, h / heads_per_kv);
      const float* values = seq.values(layer, h / heads_per_kv);
      const float slope = use_alibi ? alibi_slopes[size_t(h)] : 0.0f;
      if (scores.size() < size_t(kAttentionQueries * (start + batch.length))) {
        scores.resize(size_t(kAttentionQueries * (start + batch.length)));
      }

      for (int64_t i = 0; i < batch.length; i += kAttentionQueries) {
        const int64_t queries = std::min(kAttentionQueries, batch.length - i);
        const int64_t row = b * batch.length + i;
        // Every key of the group's last query; earlier queries mask the ones after them.
        const int64_t key_count = start + i + queries;
        table.key_scores(qkv + row * qkv_cols + h * d, qkv_cols, queries, keys, key_count, d, scores.data(), key_count);
        float inverse_totals[kAttentionQueries];
        for (int64_t g = 0; g < queries; ++g) {
          float* query_scores = scores.data() + g * key_count;
          const int64_t visible = start + i + g + 1;
          float max_score = kMasked;
          for (int64_t j = 0; j < visible; ++j) {
            // Falcon adds ALiBi before the 1/sqrt(d) scale (spec pitfall 1).
            const float score = seq.valid[size_t(j)] ? (query_scores[j] + slope * float(seq.position[size_t(j)])) * scale : kMasked;
            query_scores[j] = score;
            max_score = score > max_score ? score : max_score;
          }
          std::fill(query_scores + visible, query_scores + key_count, kMasked);
          if (max_score == kMasked) {  // no valid key: a padded query; its output (never read) is zero
            std::fill(query_scores, query_scores + key_count, 0.0f);
            inverse_totals[g] = 0.0f;
            continue;
          }
          inverse_totals[g] = 1.0f / table.exp_sum(query_scores, key_count, max_score);
        }
        float* o = out + row * H * d + h * d;
        table.weighted_sum(scores.data(), key_count, queries, values, key_count, d, o, H * d);
        for (int64_t g = 0; g < queries; ++g) {
          for (int64_t c = 0; c < d; ++c) o[g * H * d + c] *= inverse_totals[g];
        }
      }
    }
  });
}

}  // namespace falcon::cpu
