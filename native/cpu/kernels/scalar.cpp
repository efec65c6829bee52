// The reference kernels: plain loops, no intrinsics. Every other table is tested against these.
#include <cmath>

#include "../../core/dtype.h"
#include "kernels.h"

namespace falcon::cpu {
namespace {

template <typename LoadX, typename LoadW>
void matmul_reference(LoadX load_x, LoadW load_w, int64_t rows, int64_t n_begin, int64_t n_end, int64_t k,
                      const float* bias, float* y, int64_t y_stride) {
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      float sum = 0.0f;
      for (int64_t i = 0; i < k; ++i) sum += load_x(m, i) * load_w(n, i);
      y[m * y_stride + n] = sum + (bias != nullptr ? bias[n] : 0.0f);
    }
  }
}

void matmul_f32(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                int64_t k, const float* bias, float* y, int64_t y_stride) {
  const float* xf = static_cast<const float*>(x);
  const float* wf = static_cast<const float*>(w);
  matmul_reference([&](int64_t m, int64_t i) { return xf[m * x_stride + i]; },
                   [&](int64_t n, int64_t i) { return wf[n * k + i]; }, rows, n_begin, n_end, k, bias, y, y_stride);
}

void matmul_bf16(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                 int64_t k, const float* bias, float* y, int64_t y_stride) {
  const uint16_t* xb = static_cast<const uint16_t*>(x);
  const uint16_t* wb = static_cast<const uint16_t*>(w);
  matmul_reference([&](int64_t m, int64_t i) { return bf16_to_f32(xb[m * x_stride + i]); },
                   [&](int64_t n, int64_t i) { return bf16_to_f32(wb[n * k + i]); }, rows, n_begin, n_end, k, bias, y,
                   y_stride);
}

void matmul_f16(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                int64_t k, const float* bias, float* y, int64_t y_stride) {
  const float* xf = static_cast<const float*>(x);
  const uint16_t* wh = static_cast<const uint16_t*>(w);
  matmul_reference([&](int64_t m, int64_t i) { return xf[m * x_stride + i]; },
                   [&](int64_t n, int64_t i) { return f16_to_f32(wh[n * k + i]); }, rows, n_begin, n_end, k, bias, y,
                   y_stride);
}

void matmul_i8(const float* x, int64_t x_stride, int64_t rows, const int8_t* w, const float* scales, int64_t n_begin,
               int64_t n_end, int64_t k, const float* bias, float* y, int64_t y_stride) {
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      float sum = 0.0f;
      for (int64_t i = 0; i < k; ++i) sum += x[m * x_stride + i] * float(w[n * k + i]);
      y[m * y_stride + n] = sum * scales[n] + (bias != nullptr ? bias[n] : 0.0f);
    }
  }
}

void weighted_sum(const float* p, const float* v, int64_t count, int64_t d, float* out) {
  for (int64_t c = 0; c < d; ++c) out[c] = 0.0f;
  for (int64_t j = 0; j < count; ++j) {
    for (int64_t c = 0; c < d; ++c) out[c] += p[j] * v[j * d + c];
  }
}

float exp_sum(float* x, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

void gelu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
}

}  // namespace

const KernelTable& scalar_kernels() {
  static const KernelTable table{Isa::Scalar, matmul_f32, matmul_bf16, matmul_f16, matmul_i8,
                                 weighted_sum, exp_sum,   gelu};
  return table;
}

}  // namespace falcon::cpu
