#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dtype.h"
#include "memory.h"

namespace falcon {

// Outputs per panel: the width of the matmul micro-kernels' register tile (two AVX-512 registers).
constexpr int64_t kPanelWidth = 32;

// Inputs per step along k for matrices of `dtype` (see WeightMatrix).
inline int64_t k_group(DType dtype) { return dtype == DType::BFloat16 ? 2 : dtype == DType::Int8 ? 4 : 1; }

// A dense matrix of [rows = output features, cols = input features], repacked once at load into
// panels of kPanelWidth outputs, so a kernel streams every weight byte exactly once, whatever the
// number of input rows. Inside a panel, groups of k_group() consecutive input columns interleave:
// one step along k is the k_group() weights of each of the panel's 32 outputs, side by side
// (bfloat16 pairs for the pair dot product, int8 quads for the 4-byte integer dot product):
//   element (n, k) at panel(n)·stored_cols·32 + (k / g)·g·32 + (n % 32)·g + k % g,  g = k_group()
// stored_cols is cols rounded up to a multiple of g. Rows past `rows` in the last panel, and the pad
// columns, are zero. int8 matrices carry one float32 scale per row.
struct WeightMatrix {
  DType dtype = DType::Float32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::shared_ptr<void> owner;
  void* data = nullptr;
  TrackedVector<float> scales;

  int64_t k_group() const { return falcon::k_group(dtype); }
  int64_t panels() const { return (rows + kPanelWidth - 1) / kPanelWidth; }
  int64_t stored_cols() const { return (cols + k_group() - 1) / k_group() * k_group(); }
  size_t panel_bytes() const { return size_t(stored_cols()) * kPanelWidth * dtype_size(dtype); }
  size_t byte_size() const { return size_t(panels()) * panel_bytes(); }
  size_t offset(int64_t n, int64_t k) const {
    const int64_t g = k_group();
    const size_t panel_start = size_t(n / kPanelWidth) * size_t(stored_cols()) * size_t(kPanelWidth);
    return panel_start + size_t(k / g) * size_t(g * kPanelWidth) + size_t(n % kPanelWidth) * size_t(g) + size_t(k % g);
  }
  // Element (n, k) as float32 (int8 values scaled).
  float get(int64_t n, int64_t k) const;
  const void* panel(int64_t p) const { return static_cast<const char*>(data) + size_t(p) * panel_bytes(); }
};

// Allocates a matrix, zeroing only its padding slots: the weights themselves are all written at load,
// so untouched pages cost nothing until then.
WeightMatrix allocate_matrix(DType dtype, int64_t rows, int64_t cols);
// What allocate_matrix and the model's bookkeeping take for such a matrix, overflow-checked.
ByteCount matrix_memory_bytes(DType dtype, int64_t rows, int64_t cols);

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
