#include <vector>

#include "../../core/thread_pool.h"
#include "../kernels/kernels.h"
#include "../ops.h"

namespace falcon::cpu {

namespace {

// A chunk of outputs per task: its weights are streamed once and reused by every input row.
constexpr int64_t kOutputsPerTask = 64;

}  // namespace

void linear(const float* x, int64_t rows, const WeightMatrix& w, const float* bias, float* y) {
  const KernelTable& table = kernels();
  const int64_t K = w.cols;
  const int64_t N = w.rows;
  const void* x_operand = x;
  MatmulKernel kernel = table.matmul_f32;
  if (w.dtype == DType::BFloat16) {
    // bf16 models multiply in bf16: the activations are rounded once, here, for every kernel family.
    thread_local std::vector<uint16_t> rounded;
    if (rounded.size() < size_t(rows * K)) rounded.resize(size_t(rows * K));
    for (int64_t i = 0; i < rows * K; ++i) rounded[size_t(i)] = f32_to_bf16(x[i]);
    x_operand = rounded.data();
    kernel = table.matmul_bf16;
  } else if (w.dtype == DType::Float16) {
    kernel = table.matmul_f16;
  }
  global_thread_pool().parallel_for(N, kOutputsPerTask, [&](int64_t begin, int64_t end) {
    kernel(x_operand, K, rows, w.data, begin, end, K, bias, y, N);
  });
}

}  // namespace falcon::cpu
