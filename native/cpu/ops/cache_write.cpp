#include <algorithm>

#include "../../core/dtype.h"
#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

namespace {

// Stores one head's d keys into slot `slot` of a key block and its d values into a value block,
// each rounded once to the pool's element type (round to nearest even: dtype.h).
template <typename Element, typename Round>
void store_head(const float* key, const float* value, int64_t d, void* key_block, void* value_block, int64_t slot, Round round) {
  Element* keys = static_cast<Element*>(key_block) + slot;
  Element* values = static_cast<Element*>(value_block) + slot * d;
  for (int64_t c = 0; c < d; ++c) keys[c * kKvBlockTokens] = round(key[c]);
  for (int64_t c = 0; c < d; ++c) values[c] = round(value[c]);
}

}  // namespace

void write_cache(const ModelConfig& config, int64_t layer, KvPool& pool, const StepPlan& plan, int64_t rows, float* qkv,
                 int64_t qkv_cols, const float* rotary_cos, const float* rotary_sin) {
  const int64_t d = config.head_dim();
  const int64_t H = config.num_heads;
  const int64_t Hkv = config.num_kv_heads;
  const DType dtype = pool.dtype();
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
        const float* value = token_qkv + (H + Hkv + g) * d;
        void* key_block = pool.keys(block, layer, g);
        void* value_block = pool.values(block, layer, g);
        if (dtype == DType::BFloat16) {
          store_head<uint16_t>(key, value, d, key_block, value_block, slot, f32_to_bf16);
        } else if (dtype == DType::Float16) {
          store_head<uint16_t>(key, value, d, key_block, value_block, slot, f32_to_f16);
        } else {
          store_head<float>(key, value, d, key_block, value_block, slot, [](float x) { return x; });
        }
      }
    }
  });
}

}  // namespace falcon::cpu
