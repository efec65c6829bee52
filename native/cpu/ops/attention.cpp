#include <cmath>
#include <limits>
#include <vector>

#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void attention(const ModelConfig& config, int64_t layer, const AttentionBatch& batch, const float* qkv,
               int64_t qkv_cols, const std::vector<float>& alibi_slopes, float* out) {
  const int64_t H = config.num_heads;
  const int64_t d = config.head_dim();
  const int64_t heads_per_kv = H / config.num_kv_heads;
  const float scale = float(1.0 / std::sqrt(double(d)));
  const bool use_alibi = !alibi_slopes.empty();

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
        const int64_t last_key = start + i;
        float max_score = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= last_key; ++j) {
          if (!seq.valid[size_t(j)]) continue;
          const float* k = keys + j * d;
          float dot = 0.0f;
          for (int64_t c = 0; c < d; ++c) dot += q[c] * k[c];
          // Falcon adds ALiBi before the 1/sqrt(d) scale (spec pitfall 1).
          const float score = (use_alibi ? dot + slope * float(seq.position[size_t(j)]) : dot) * scale;
          scores[size_t(j)] = score;
          if (score > max_score) max_score = score;
        }
        for (int64_t c = 0; c < d; ++c) o[c] = 0.0f;
        if (max_score == -std::numeric_limits<float>::infinity()) continue;  // no valid key: a padded query
        float total = 0.0f;
        for (int64_t j = 0; j <= last_key; ++j) {
          if (!seq.valid[size_t(j)]) continue;
          const float p = std::exp(scores[size_t(j)] - max_score);
          scores[size_t(j)] = p;
          total += p;
        }
        const float inverse_total = 1.0f / total;
        for (int64_t j = 0; j <= last_key; ++j) {
          if (!seq.valid[size_t(j)]) continue;
          const float p = scores[size_t(j)] * inverse_total;
          const float* v = values + j * d;
          for (int64_t c = 0; c < d; ++c) o[c] += p * v[c];
        }
      }
    }
  });
}

}  // namespace falcon::cpu
