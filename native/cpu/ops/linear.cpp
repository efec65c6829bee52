#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../../core/error.h"
#include "../../core/thread_pool.h"
#include "../kernels/kernels.h"
#include "../ops.h"

namespace falcon::cpu {

PackedRows PackedActivations::rows() const {
  PackedRows view;
  view.units = units_.data();
  view.rows = rows_;
  view.steps = steps_;
  view.float_units = float_units_;
  view.quant_blocks = quant_blocks_;
  view.block_scales = block_scales_.data();
  view.block_sums = block_sums_.data();
  view.int4_groups = int4_groups_;
  view.group_sums = group_sums_.data();
  return view;
}

void PackedActivations::release_if_large() {
  falcon::release_if_large(units_);
  falcon::release_if_large(block_scales_);
  falcon::release_if_large(block_sums_);
  falcon::release_if_large(group_sums_);
}

void pack_activations(const float* x, int64_t rows, int64_t cols, DType weight_dtype, const LayerNormParams* norm,
                      PackedActivations& out) {
  const KernelTable& table = kernels();
  out.kernels_ = &table;
  const int64_t group = k_group(weight_dtype);
  // bf16 inputs as float32 units: a step each, two for each of the weights' steps (pad included).
  const bool float_units = weight_dtype == DType::BFloat16 && rows > table.bf16_pairs_max_rows;
  const int64_t steps = (cols + group - 1) / group * (float_units ? group : 1);
  const int64_t blocks = (rows + kPackedRows - 1) / kPackedRows;
  const int64_t quant_blocks = group == 4 ? (steps + kQuantSteps - 1) / kQuantSteps : 0;
  out.rows_ = rows;
  out.cols_ = cols;
  out.k_group_ = group;
  out.steps_ = steps;
  out.float_units_ = float_units;
  out.quant_blocks_ = quant_blocks;
  const int64_t int4_groups = weight_dtype == DType::Int4 ? (cols + kInt4Group - 1) / kInt4Group : 0;
  constexpr int64_t kInt4GroupSteps = kInt4Group / 4;
  out.int4_groups_ = int4_groups;
  if (out.group_sums_.size() < size_t(rows * int4_groups)) out.group_sums_.resize(size_t(rows * int4_groups));
  // Slots of rows past the end are never read: micro-kernels read only the rows a block has.
  if (out.units_.size() < size_t(blocks * steps * kPackedRows)) out.units_.resize(size_t(blocks * steps * kPackedRows));
  if (out.block_scales_.size() < size_t(rows * quant_blocks)) {
    out.block_scales_.resize(size_t(rows * quant_blocks));
    out.block_sums_.resize(size_t(rows * quant_blocks));
  }
  uint32_t* units = out.units_.data();
  float* block_scales = out.block_scales_.data();
  int32_t* block_sums = out.block_sums_.data();
  int32_t* group_sums = out.group_sums_.data();
  current_thread_pool()->parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
    // This worker's own buffer for a normalised row, kept for later calls.
    thread_local TrackedVector<float> normalised = thread_scratch<float>();
    for (int64_t m = begin; m < end; ++m) {
      const float* row = x + m * cols;
      if (norm != nullptr) {
        if (normalised.size() < size_t(cols)) normalised.resize(size_t(cols));
        table.layer_norm_row(row, cols, norm->gamma, norm->beta, norm->epsilon, normalised.data());
        row = normalised.data();
      }
      uint32_t* row_units = units + (m / kPackedRows) * steps * kPackedRows + m % kPackedRows;
      if (group == 4) {
        table.quantise_row(row, cols, quant_blocks, row_units, block_scales + m * quant_blocks, block_sums + m * quant_blocks);
        for (int64_t g = 0; g < int4_groups; ++g) {
          int32_t sum = 0;
          for (int64_t s = g * kInt4GroupSteps; s < std::min(steps, (g + 1) * kInt4GroupSteps); ++s) {
            const uint32_t unit = row_units[s * kPackedRows];
            for (int j = 0; j < 4; ++j) sum += int8_t(uint8_t(unit >> (8 * j)));
          }
          group_sums[m * int4_groups + g] = sum;
        }
      } else if (float_units) {
        for (int64_t s = 0; s < steps; ++s) row_units[s * kPackedRows] = s < cols ? uint32_t(f32_to_bf16(row[s])) << 16 : 0u;
      } else if (group == 2) {
        for (int64_t s = 0; s < steps; ++s) {
          const uint32_t high = 2 * s + 1 < cols ? f32_to_bf16(row[2 * s + 1]) : 0u;
          row_units[s * kPackedRows] = uint32_t(f32_to_bf16(row[2 * s])) | (high << 16);
        }
      } else {
        for (int64_t s = 0; s < steps; ++s) std::memcpy(&row_units[s * kPackedRows], &row[s], sizeof(float));
      }
    }
    release_if_large(normalised);
  });
}

void matmul(const PackedActivations& x, const WeightMatrix& w, const Epilogue& epilogue, float* y) {
  if (x.cols() != w.cols || x.k_group() != w.k_group()) {
    throw Error(ErrorKind::State, "activations packed for another weight layout");
  }
  const MatmulKernel kernel = matmul_kernel(x.kernels(), w.dtype);
  const PackedRows rows = x.rows();
  current_thread_pool()->parallel_for(w.panels(), 1, [&](int64_t begin, int64_t end) {
    kernel(rows, w, begin, end, epilogue, y, w.rows);
  });
}

void linear(const float* x, int64_t rows, const WeightMatrix& w, const float* bias, float* y) {
  // Reused across calls on this thread, so projecting each decoded token allocates nothing.
  thread_local PackedActivations packed(MemoryUse::ThreadScratch);
  pack_activations(x, rows, w.cols, w.dtype, nullptr, packed);
  Epilogue epilogue;
  epilogue.bias = bias;
  matmul(packed, w, epilogue, y);
  packed.release_if_large();
}

}  // namespace falcon::cpu
