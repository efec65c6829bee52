#include <algorithm>
#include <vector>

#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

namespace {

constexpr int64_t kRowsPerBlock = 4;

// Eight running sums let the compiler keep the inner loop in vector registers without reassociating.
inline float dot(const float* a, const float* b, int64_t n) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) partial[k] += a[i + k] * b[i + k];
  }
  float sum = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

void linear(const float* x, int64_t rows, const WeightMatrix& w, const float* bias, float* y) {
  const int64_t K = w.cols;
  const int64_t N = w.rows;
  const int64_t blocks = (N + kRowsPerBlock - 1) / kRowsPerBlock;
  global_thread_pool().parallel_for(blocks, 1, [&](int64_t first_block, int64_t end_block) {
    // Widened weight rows, reused for every input row: the conversion cost is paid once per call.
    thread_local std::vector<float> widened;
    if (w.dtype != DType::Float32 && widened.size() < size_t(kRowsPerBlock * K)) widened.resize(size_t(kRowsPerBlock * K));
    for (int64_t block = first_block; block < end_block; ++block) {
      const int64_t n0 = block * kRowsPerBlock;
      const int64_t n_count = std::min(kRowsPerBlock, N - n0);
      const float* weight_rows[kRowsPerBlock];
      for (int64_t j = 0; j < n_count; ++j) {
        if (w.dtype == DType::Float32) {
          weight_rows[j] = static_cast<const float*>(w.row(n0 + j));
        } else {
          float* dest = widened.data() + j * K;
          const void* src = w.row(n0 + j);
          for (int64_t k = 0; k < K; ++k) dest[k] = load_as_f32(src, w.dtype, size_t(k));
          weight_rows[j] = dest;
        }
      }
      for (int64_t m = 0; m < rows; ++m) {
        const float* x_row = x + m * K;
        float* y_row = y + m * N;
        for (int64_t j = 0; j < n_count; ++j) {
          y_row[n0 + j] = dot(x_row, weight_rows[j], K) + (bias != nullptr ? bias[n0 + j] : 0.0f);
        }
      }
    }
  });
}

}  // namespace falcon::cpu
