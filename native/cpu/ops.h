#pragma once
// The CPU operators of the forward pass, one per file in ops/. Each is the reference the faster
// kernels (and the CUDA backend) are checked against.
#include <cstdint>
#include <vector>

#include "../core/kv_cache.h"
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
      : units_(TrackedAllocator<uint32_t>(use)), block_scales_(TrackedAllocator<float>(use)), block_sums_(TrackedAllocator<int32_t>(use)) {}
  PackedRows rows() const;
  int64_t cols() const { return cols_; }
  int64_t k_group() const { return k_group_; }
  // For a per-thread instance: drops buffers grown past kKeptScratchBytes.
  void release_if_large();

 private:
  friend void pack_activations(const float*, int64_t, int64_t, DType, const LayerNormParams*, PackedActivations&);
  TrackedVector<uint32_t> units_;
  TrackedVector<float> block_scales_;
  TrackedVector<int32_t> block_sums_;
  int64_t rows_ = 0, cols_ = 0, k_group_ = 1, steps_ = 0, quant_blocks_ = 0;
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

// Population-variance layer norm in float32, per row of `dim` values.
void layer_norm(const float* x, int64_t rows, int64_t dim, const LayerNormParams& norm, float* y);

// out[i] = table[ids[i]] widened to float32.
void embedding(const WeightMatrix& table, const int32_t* ids, int64_t count, float* out);

// cos/sin of every (position, frequency) pair: [count, head_dim / 2] each. `sequence_length` is the
// longest sequence seen in this call (dynamic NTK scaling grows the base with it).
void rotary_tables(const ModelConfig& config, const int32_t* positions, int64_t count, int64_t sequence_length,
                   float* cos_out, float* sin_out);
// NeoX rotate-half rotation of `num_heads` consecutive heads of one token, in place.
void apply_rotary(float* heads, int64_t num_heads, int64_t head_dim, const float* cos_row, const float* sin_row);

struct AttentionBatch {
  int64_t batch = 0;
  int64_t length = 0;
  const std::vector<SequenceKv*>* sequences = nullptr;
  const std::vector<int64_t>* start = nullptr;
};

// Rotates each new token's query and key heads when `rotary_cos` is given ([batch·length, head_dim / 2]
// tables), then stores its keys and values in its sequence's cache at start + t, for one layer.
void write_cache(const ModelConfig& config, int64_t layer, const AttentionBatch& batch, float* qkv, int64_t qkv_cols,
                 const float* rotary_cos, const float* rotary_sin);

// Causal attention of `length` new queries per row over each sequence's valid cached slots, for
// one layer. Queries are the first num_heads·head_dim columns of `qkv` ([batch·length, qkv_cols]);
// output is [batch·length, num_heads·head_dim]. ALiBi slopes (may be empty) are added before the scale.
void attention(const ModelConfig& config, int64_t layer, const AttentionBatch& batch, const float* qkv,
               int64_t qkv_cols, const std::vector<float>& alibi_slopes, float* out);

}  // namespace falcon::cpu
