#include <cstring>
#include <vector>

#include "../../core/thread_pool.h"
#include "../kernels/kernels.h"
#include "../ops.h"

namespace falcon::cpu {

namespace {

// Packs x into the kernels' row blocks (kernels.h): float32 units, or bf16 pairs for bf16 weights.
void pack_rows(const float* x, int64_t rows, int64_t cols, bool bf16_pairs, std::vector<uint32_t>& packed) {
  const int64_t steps = bf16_pairs ? (cols + 1) / 2 : cols;
  const int64_t blocks = (rows + kPackedRows - 1) / kPackedRows;
  // Slots of rows past the end are never read: micro-kernels read only the rows a block has.
  if (packed.size() < size_t(blocks * steps * kPackedRows)) packed.resize(size_t(blocks * steps * kPackedRows));
  uint32_t* packed_data = packed.data();
  global_thread_pool().parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* row = x + m * cols;
      uint32_t* out = packed_data + (m / kPackedRows) * steps * kPackedRows + m % kPackedRows;
      if (bf16_pairs) {
        for (int64_t s = 0; s < steps; ++s) {
          const uint32_t high = 2 * s + 1 < cols ? f32_to_bf16(row[2 * s + 1]) : 0u;
          out[s * kPackedRows] = uint32_t(f32_to_bf16(row[2 * s])) | (high << 16);
        }
      } else {
        for (int64_t s = 0; s < steps; ++s) std::memcpy(&out[s * kPackedRows], &row[s], sizeof(float));
      }
    }
  });
}

}  // namespace

void linear(const float* x, int64_t rows, const WeightMatrix& w, const float* bias, float* y) {
  const KernelTable& table = kernels();
  const MatmulKernel kernel = matmul_kernel(table, w.dtype);
  // Reused across calls on this thread, so decoding allocates nothing per token.
  thread_local std::vector<uint32_t> packed;
  pack_rows(x, rows, w.cols, w.dtype == DType::BFloat16, packed);
  // Taken here: inside the task, `packed` would name the worker thread's own (empty) buffer.
  const uint32_t* packed_x = packed.data();
  global_thread_pool().parallel_for(w.panels(), 1, [&](int64_t begin, int64_t end) {
    kernel(packed_x, rows, w, begin, end, bias, y, w.rows);
  });
}

}  // namespace falcon::cpu
