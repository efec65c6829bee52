#pragma once
// The CPU operators of the forward pass, one per file in ops/. Each is the reference the faster
// kernels (and the CUDA backend) are checked against.
#include <cstdint>
#include <vector>

#include "../core/kv_pool.h"
#include "../core/memory.h"
#include "../core/model_config.h"
#include "../core/weights.h"
#include "kernels/kernels.h"

namespace falcon::cpu {

struct LayerNormParams {
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float epsilon = 1e-5f;
};

// Activation rows packed for the matmul kernels of one weight dtype (kernels.h). The buffers grow on
// demand and are reused, so a workspace that keeps one allocates nothing per decoded token.
class PackedActivations {
 public:
  explicit PackedActivations(MemoryUse use = MemoryUse::Owned)
      : units_(TrackedAllocator<uint32_t>(use)), block_scales_(TrackedAllocator<float>(use)), block_sums_(TrackedAllocator<int32_t>(use)),
        group_sums_(TrackedAllocator<int32_t>(use)) {}
  PackedRows rows() const;
  int64_t cols() const { return cols_; }
  int64_t k_group() const { return k_group_; }
  // The kernel family the rows were packed for (the active one then): the one their matmul runs on, since
  // families pack bfloat16 inputs differently and setIsa may switch the active one between the two calls.
  const KernelTable& kernels() const { return *kernels_; }
  // For a per-thread instance: drops buffers grown past kKeptScratchBytes.
  void release_if_large();

 private:
  friend void pack_activations(const float*, int64_t, int64_t, DType, const LayerNormParams*, PackedActivations&);
  TrackedVector<uint32_t> units_;
  TrackedVector<float> block_scales_;
  TrackedVector<int32_t> block_sums_;
  TrackedVector<int32_t> group_sums_;  // int4 weights only
  int64_t rows_ = 0, cols_ = 0, k_group_ = 1, steps_ = 0, quant_blocks_ = 0, int4_groups_ = 0;
  bool float_units_ = false;
  const KernelTable* kernels_ = &cpu::kernels();
};

// Packs x[rows, cols] for matmuls with weights of `weight_dtype`. With `norm`, each row is layer-normed
// on the way (the same arithmetic as layer_norm), so the normalised activations are never stored.
void pack_activations(const float* x, int64_t rows, int64_t cols, DType weight_dtype, const LayerNormParams* norm,
                      PackedActivations& out);

// y[rows, w.rows] (+)= epilogue(x · wᵀ), accumulating in float32 whatever w's dtype. x must have been
// packed for w's dtype and width.
void matmul(const PackedActivations& x, const WeightMatrix& w, const Epilogue& epilogue, float* y);

// y[rows, w.rows] = x[rows, w.cols] · wᵀ (+ bias): pack and matmul in one, for callers without a workspace.
void linear(const float* x, int64_t rows, const WeightMatrix& w, const float* bias, float* y);

// Population-variance layer norm in float32 of rows rows[0 .. count) of x ([*, dim]) into y ([count, dim]).
void layer_norm(const float* x, const int64_t* rows, int64_t count, int64_t dim, const LayerNormParams& norm, float* y);

// out[i] = table[ids[i]] widened to float32.
void embedding(const WeightMatrix& table, const int32_t* ids, int64_t count, float* out);

// cos/sin of every (position, frequency) pair: [count, head_dim / 2] each, for tokens of one sequence.
// `sequence_length` is that sequence's rope_length (dynamic NTK scaling grows the base with it).
void rotary_tables(const ModelConfig& config, const int32_t* positions, int64_t count, int64_t sequence_length,
                   float* cos_out, float* sin_out);
// NeoX rotate-half rotation of `num_heads` consecutive heads of one token, in place.
void apply_rotary(float* heads, int64_t num_heads, int64_t head_dim, const float* cos_row, const float* sin_row);

// One sequence of a step as attention reads it.
struct PagedSequence {
  const int32_t* block_table = nullptr;
  int64_t start = 0;
  int64_t count = 0;
  int64_t first_row = 0;               // the step row of its first new token
  const uint8_t* valid = nullptr;      // slots [0, start + count), gathered from the pool's blocks
  const int32_t* positions = nullptr;  // likewise
};

// A unit of attention work: `tokens` consecutive new tokens of one sequence for query head `head`;
// or, for a sequence's single decode token, `heads` query heads from `head` that share one KV head.
struct AttentionItem {
  int64_t sequence = 0;
  int64_t head = 0;
  int64_t heads = 1;
  int64_t first_token = 0;
  int64_t tokens = 1;
};

// What the operators of one step share: built once per step, read by every layer.
struct StepPlan {
  TrackedVector<PagedSequence> sequences;
  // Attention of every new token; and of the step's output rows alone, which is all the last layer
  // needs once every token's keys and values are written.
  TrackedVector<AttentionItem> attention_items, output_attention_items;
  // Per step row: the pool block and slot its keys and values go to, and whether it is an output row.
  TrackedVector<int32_t> row_blocks;
  TrackedVector<int32_t> row_slots;
  TrackedVector<uint8_t> row_is_output;
};

// Fills plan.attention_items and plan.output_attention_items from plan.sequences and
// plan.row_is_output, splitting long prompts so threads share them evenly.
void plan_attention(const ModelConfig& config, StepPlan& plan);

// Rotates each new token's query and key heads when `rotary_cos` is given ([rows, head_dim / 2]
// tables), then stores its keys and values in its pool slot (plan.row_blocks / row_slots), for one layer.
void write_cache(const ModelConfig& config, int64_t layer, KvPool& pool, const StepPlan& plan, int64_t rows, float* qkv,
                 int64_t qkv_cols, const float* rotary_cos, const float* rotary_sin);

// Causal attention of every new token over its sequence's valid slots up to and including its own,
// for one layer, over the pool's blocks. Queries are the first num_heads·head_dim columns of `qkv`
// ([rows, qkv_cols]); output is [rows, num_heads·head_dim]. ALiBi slopes (may be empty) are added
// before the scale. A token's output depends on nothing but its own sequence.
// Runs `items` (one of the plan's lists); rows no item covers are left as they were.
void attention(const ModelConfig& config, int64_t layer, const KvPool& pool, const StepPlan& plan,
               const TrackedVector<AttentionItem>& items, const float* qkv, int64_t qkv_cols,
               const std::vector<float>& alibi_slopes, float* out);

}  // namespace falcon::cpu
