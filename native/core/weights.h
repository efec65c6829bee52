#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtype.h"
#include "memory.h"

namespace falcon {

// Outputs per panel: the width of the matmul micro-kernels' register tile (two AVX-512 registers).
constexpr int64_t kPanelWidth = 32;

// Inputs per step along k for matrices of `dtype` (see WeightMatrix): int4 matrices multiply the same
// int8 quads of activations as int8 ones.
inline int64_t k_group(DType dtype) { return dtype == DType::BFloat16 ? 2 : is_quantised(dtype) ? 4 : 1; }

// int4 (ggml's Q4_0 block): inputs per scale, and the bytes of one group of a panel, 32 outputs × 32
// inputs: 512 bytes of nibbles, then the 32 outputs' float16 scales.
constexpr int64_t kInt4Group = 32;
constexpr size_t kInt4NibbleBytes = size_t(kPanelWidth * kInt4Group / 2);
constexpr size_t kInt4GroupBytes = kInt4NibbleBytes + size_t(kPanelWidth) * sizeof(uint16_t);

// The byte of a group's nibbles holding inputs j and j + 16 (j < 16) of output o (< 32) of its panel, in
// the low and high nibble: ggml's Q4_0 byte qs[j] of that output's block, as it is. Bytes are in 64-byte
// vectors (2t + h)·64, t = j / 4, h = o / 16, so one vector holds steps t (low nibbles) and t + 4 (high)
// of 16 outputs as the 4-byte quads the byte dot products multiply: masking the low nibbles or shifting
// down the high ones gives the unsigned operand, one unpack for two steps.
constexpr size_t int4_nibble_byte(int64_t o, int64_t j) {
  return size_t((2 * (j / 4) + o / 16) * 64 + (o % 16) * 4 + j % 4);
}

// A dense matrix of [rows = output features, cols = input features], repacked once at load into
// panels of kPanelWidth outputs, so a kernel streams every weight byte exactly once, whatever the
// number of input rows. Inside a panel, groups of k_group() consecutive input columns interleave:
// one step along k is the k_group() weights of each of the panel's 32 outputs, side by side
// (bfloat16 pairs for the pair dot product, int8 quads for the 4-byte integer dot product):
//   element (n, k) at panel(n)·stored_cols·32 + (k / g)·g·32 + (n % 32)·g + k % g,  g = k_group()
// stored_cols is cols rounded up to a multiple of g. Rows past `rows` in the last panel, and the pad
// columns, are zero. int8 matrices carry one float32 scale per row.
// int4 matrices hold the same panels of 32 outputs, each a run of groups of kInt4Group inputs
// (stored_cols is cols rounded up to 32): group g of panel p at panel(p) + g · kInt4GroupBytes holds
// the nibbles q (int4_nibble_byte) and the float16 scales d (output o at byte kInt4NibbleBytes + 2o);
// (n, k) is (q − 8) · d. A row is quantised 32 inputs at a time exactly as ggml's
// quantize_row_q4_0_ref does (quantise_int4_block), the last group padded with zeros (q = 8), so a Q4_0
// tensor's blocks can be placed as they are, and Q4_0 values dequantised to float32 quantise back to
// the same q and d. Rows past `rows` have d = 0 and q = 8.
struct WeightMatrix {
  DType dtype = DType::Float32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::shared_ptr<void> owner;
  void* data = nullptr;
  TrackedVector<float> scales;

  int64_t k_group() const { return falcon::k_group(dtype); }
  int64_t panels() const { return (rows + kPanelWidth - 1) / kPanelWidth; }
  int64_t stored_cols() const {
    const int64_t align = dtype == DType::Int4 ? kInt4Group : k_group();
    return (cols + align - 1) / align * align;
  }
  size_t panel_bytes() const {
    if (dtype == DType::Int4) return size_t(stored_cols() / kInt4Group) * kInt4GroupBytes;
    return size_t(stored_cols()) * kPanelWidth * dtype_size(dtype);
  }
  size_t byte_size() const { return size_t(panels()) * panel_bytes(); }
  // Element offset of (n, k) for the dtypes with whole-byte elements (not int4).
  size_t offset(int64_t n, int64_t k) const {
    const int64_t g = k_group();
    const size_t panel_start = size_t(n / kPanelWidth) * size_t(stored_cols()) * size_t(kPanelWidth);
    return panel_start + size_t(k / g) * size_t(g * kPanelWidth) + size_t(n % kPanelWidth) * size_t(g) + size_t(k % g);
  }
  // Element (n, k) as float32 (int8 and int4 values scaled).
  float get(int64_t n, int64_t k) const;
  const void* panel(int64_t p) const { return static_cast<const char*>(data) + size_t(p) * panel_bytes(); }
  // int4: the bytes of group g (inputs 32g ..) of the panel holding output n.
  uint8_t* int4_group(int64_t n, int64_t g) const {
    return static_cast<uint8_t*>(data) + size_t(n / kPanelWidth) * panel_bytes() + size_t(g) * kInt4GroupBytes;
  }
  // int4: writes output n's block g, 32 nibbles q (< 16) of inputs 32g .. 32g + 31 and its scale's bits.
  void set_int4_block(int64_t n, int64_t g, const uint8_t* q, uint16_t scale_bits);
};

// A backend that keeps the weight matrices itself (CUDA: in device memory) receives them here as they
// load, instead of the model's host panels, so they are in memory once: each matrix when the model is
// built, then its rows as they are set (from several loader threads at once), row-major in the model
// dtype: float32, bfloat16 or float16 bits, or int8 as signed bytes with one float32 scale per row.
class WeightSink {
 public:
  virtual ~WeightSink() = default;
  // Throws (Error) when the backend cannot hold it, before any row is read.
  virtual void add_matrix(const std::string& name, DType dtype, int64_t rows, int64_t cols) = 0;
  // `scales` is null except for int8. The rows are the caller's again once this returns.
  virtual void write_rows(const std::string& name, int64_t first, int64_t count, const void* rows, const float* scales) = 0;
};

// The int8 scale of one row of `cols` values: symmetric, the largest magnitude maps to ±127 (scale 1
// for an all-zero row); a value v is stored as nearbyint(v / scale).
float int8_row_scale(const float* values, int64_t cols);

// ggml's quantize_row_q4_0_ref on one block of kInt4Group values: the value of largest magnitude m
// (the first, on a tie), d = m / −8, q = min(15, trunc(x / d + 8.5)) (q = 8 where d = 0), d stored as
// float16. NaN gives q = 0 rather than undefined behaviour.
void quantise_int4_block(const float* x, uint8_t* q, uint16_t* scale_bits);

// Allocates a matrix, zeroing only its padding slots: the weights themselves are all written at load,
// so untouched pages cost nothing until then.
WeightMatrix allocate_matrix(DType dtype, int64_t rows, int64_t cols);
// Writes row n of `m` from float32 values: rounded to the matrix dtype, for int8 quantised
// symmetrically per row (the largest magnitude maps to ±127), for int4 as Q4_0 blocks (above).
void store_matrix_row(WeightMatrix& m, int64_t n, const float* values);
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
