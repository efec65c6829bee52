#include <algorithm>

#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void write_cache(const ModelConfig& config, int64_t layer, KvPool& pool, const StepPlan& plan, int64_t rows, float* qkv,
                 int64_t qkv_cols, const float* rotary_cos, const float* rotary_sin) {
  const int64_t d = config.head_dim();
  const int64_t H = config.num_heads;
  const int64_t Hkv = config.num_kv_heads;
  // Tokens are independent and each writes its own slot (validate_step refuses a block written
  // twice), so a long prompt's copies (and the first touch of fresh pages) are shared by every thread.
  current_thread_pool()->parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t block = plan.row_blocks[size_t(row)];
      const int64_t slot = plan.row_slots[size_t(row)];
      float* token_qkv = qkv + row * qkv_cols;
      if (rotary_cos != nullptr) {
        apply_rotary(token_qkv, H + Hkv, d, rotary_cos + row * (d / 2), rotary_sin + row * (d / 2));  // query and key heads are adjacent
      }
      for (int64_t g = 0; g < Hkv; ++g) {
        const float* key = token_qkv + (H + g) * d;
        float* key_block = pool.keys(block, layer, g) + slot;
        for (int64_t c = 0; c < d; ++c) key_block[c * kKvBlockTokens] = key[c];
        std::copy_n(token_qkv + (H + Hkv + g) * d, d, pool.values(block, layer, g) + slot * d);
      }
    }
  });
}

}  // namespace falcon::cpu
