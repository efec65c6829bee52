#include <algorithm>

#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void write_cache(const ModelConfig& config, int64_t layer, const AttentionBatch& batch, float* qkv, int64_t qkv_cols,
                 const float* rotary_cos, const float* rotary_sin) {
  const int64_t d = config.head_dim();
  const int64_t H = config.num_heads;
  const int64_t Hkv = config.num_kv_heads;
  // Tokens are independent and each writes its own cache slot, so a long prompt's copies (and the first
  // touch of a fresh cache's pages) are shared by every thread.
  current_thread_pool()->parallel_for(batch.batch * batch.length, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / batch.length;
      SequenceKv& seq = *(*batch.sequences)[size_t(b)];
      const int64_t slot = (*batch.start)[size_t(b)] + row % batch.length;
      float* token_qkv = qkv + row * qkv_cols;
      if (rotary_cos != nullptr) {
        apply_rotary(token_qkv, H + Hkv, d, rotary_cos + row * (d / 2), rotary_sin + row * (d / 2));  // query and key heads are adjacent
      }
      for (int64_t g = 0; g < Hkv; ++g) {
        std::copy_n(token_qkv + (H + g) * d, d, seq.keys(layer, g) + slot * d);
        std::copy_n(token_qkv + (H + Hkv + g) * d, d, seq.values(layer, g) + slot * d);
      }
    }
  });
}

}  // namespace falcon::cpu
