#pragma once
#include <cstdint>
#include <string>

#include "model.h"
#include "weight_file.h"

namespace falcon {

// ggml's block-quantised tensor types (ggml.h's enum ggml_type values, as GGUF files store them).
enum class GgmlQuantType : uint32_t {
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
};

// The values and bytes of one block of `type`; false for a type this file does not dequantise.
bool ggml_quant_block(uint32_t type, int64_t* block_values, int64_t* block_bytes);

// ggml's reference dequantisation (ggml-quants.c dequantize_row_*), scalar: `count` values (a
// multiple of the block) from the blocks at `src` into `dst`.
void dequantize_ggml_row(GgmlQuantType type, const uint8_t* src, float* dst, int64_t count);

// Model::set_weight from a quantised GGUF tensor: `rows` rows of `cols` values at `byte_offset` of
// `file`, read a bounded block of rows at a time, dequantised to float32, then stored in the model dtype.
void set_weight_from_ggml(Model& model, const std::string& name, int64_t row_offset, GgmlQuantType type, int64_t rows,
                          int64_t cols, const WeightFile& file, uint64_t byte_offset);

}  // namespace falcon
