#include <cmath>
#include <limits>
#include <vector>

#include "../../core/thread_pool.h"
#include "../kernels/kernels.h"
#include "../ops.h"

namespace falcon::cpu {

// One query row at a time against all its keys: scores are a vector of the keys seen so far, never
// a [queries, keys] matrix, so memory stays linear in the sequence length.
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
    thread_local std::vector<float> scores;
    for (int64_t item = first; item < end; ++item) {
      const int64_t b = item / H;
      const int64_t h = item % H;
      const SequenceKv& seq = *(*batch.sequences)[size_t(b)];
      const int64_t start = (*batch.start)[size_t(b)];
      const float* keys = seq.keys(layer, h / heads_per_kv);
      const float* values = seq.values(layer, h / heads_per_kv);
      const float slope = use_alibi ? alibi_slopes[size_t(h)] : 0.0f;
      if (scores.size() < size_t(start + batch.length)) scores.resize(size_t(start + batch.length));

      for (int64_t i = 0; i < batch.length; ++i) {
        const int64_t row = b * batch.length + i;
        const float* q = qkv + row * qkv_cols + h * d;
        float* o = out + row * H * d + h * d;
        const int64_t key_count = start + i + 1;
        table.key_scores(q, keys, key_count, d, scores.data());
        float max_score = kMasked;
        for (int64_t j = 0; j < key_count; ++j) {
          // Falcon adds ALiBi before the 1/sqrt(d) scale (spec pitfall 1).
          const float score = seq.valid[size_t(j)] ? (scores[size_t(j)] + slope * float(seq.position[size_t(j)])) * scale : kMasked;
          scores[size_t(j)] = score;
          max_score = score > max_score ? score : max_score;
        }
        if (max_score == kMasked) {  // no valid key: a padded query; its output is never read
          for (int64_t c = 0; c < d; ++c) o[c] = 0.0f;
          continue;
        }
        const float total = table.exp_sum(scores.data(), key_count, max_score);
        table.weighted_sum(scores.data(), values, key_count, d, o);
        const float inverse_total = 1.0f / total;
        for (int64_t c = 0; c < d; ++c) o[c] *= inverse_total;
      }
    }
  });
}

}  // namespace falcon::cpu
