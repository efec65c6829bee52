#pragma once
// The CPU operators of the forward pass, one per file in ops/. Each is the reference the faster
// kernels (and the CUDA backend) are checked against.
#include <cstdint>
#include <vector>

#include "../core/kv_cache.h"
#include "../core/model_config.h"
#include "../core/weights.h"

namespace falcon::cpu {

// y[rows, w.rows] = x[rows, w.cols] · wᵀ (+ bias). Accumulates in float32 whatever w's dtype.
void linear(const float* x, int64_t rows, const WeightMatrix& w, const float* bias, float* y);

// Population-variance layer norm in float32, per row of `dim` values.
void layer_norm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float epsilon,
                float* y);

// Exact-erf GELU, in place.
void gelu(float* x, int64_t count);

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

// Causal attention of `length` new queries per row over each sequence's valid cached slots, for
// one layer. Queries are the first num_heads·head_dim columns of `qkv` ([batch·length, qkv_cols]);
// output is [batch·length, num_heads·head_dim]. ALiBi slopes (may be empty) are added before the scale.
void attention(const ModelConfig& config, int64_t layer, const AttentionBatch& batch, const float* qkv,
               int64_t qkv_cols, const std::vector<float>& alibi_slopes, float* out);

}  // namespace falcon::cpu
