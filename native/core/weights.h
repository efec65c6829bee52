#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dtype.h"

namespace falcon {

// A dense matrix stored row-major as [rows = output features, cols = input features] (the torch
// nn.Linear layout), so a matrix-vector product reads each output's weights contiguously.
// `owner` keeps the bytes alive: a heap buffer, or a mapped file when the checkpoint layout matches.
struct WeightMatrix {
  DType dtype = DType::Float32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::shared_ptr<void> owner;
  void* data = nullptr;

  size_t byte_size() const { return size_t(rows) * size_t(cols) * dtype_size(dtype); }
  const void* row(int64_t r) const { return static_cast<const char*>(data) + size_t(r) * size_t(cols) * dtype_size(dtype); }
};

WeightMatrix allocate_matrix(DType dtype, int64_t rows, int64_t cols);

// Norm parameters and biases are tiny; they are kept in float32 (after rounding through the
// model dtype, so they hold exactly the values a model of that dtype has).
using WeightVector = std::vector<float>;

struct LayerWeights {
  WeightVector attn_norm_gamma, attn_norm_beta;  // input_layernorm or ln_attn
  WeightVector mlp_norm_gamma, mlp_norm_beta;    // post_attention_layernorm or ln_mlp; empty for one-norm blocks
  WeightMatrix qkv;                              // rows: all query heads, then key heads, then value heads
  WeightVector qkv_bias;
  WeightMatrix attn_out;
  WeightVector attn_out_bias;
  WeightMatrix ffn_up;
  WeightVector ffn_up_bias;
  WeightMatrix ffn_down;
  WeightVector ffn_down_bias;
};

// One contiguous source tensor to copy into (part of) a named weight.
// Logical shape [rows, cols]; `input_major` means the source is stored transposed, [cols, rows]
// (the Keras kernel layout y = x·W), and is transposed while it is copied.
struct TensorSource {
  const void* data = nullptr;
  DType dtype = DType::Float32;
  int64_t rows = 0;
  int64_t cols = 0;
  bool input_major = false;
};

}  // namespace falcon
