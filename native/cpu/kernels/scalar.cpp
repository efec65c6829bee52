// The reference kernels: plain loops, no intrinsics. Every other table is tested against these.
#include <cmath>
#include <cstring>

#include "../../core/dtype.h"
#include "kernels.h"

namespace falcon::cpu {
namespace {

// The units of packed row m, step s.
inline uint32_t packed_unit(const uint32_t* packed, int64_t steps, int64_t m, int64_t s) {
  return packed[(m / kPackedRows * steps + s) * kPackedRows + m % kPackedRows];
}

inline float unit_as_float(uint32_t unit) {
  float value;
  std::memcpy(&value, &unit, sizeof value);
  return value;
}

void matmul(const uint32_t* packed_x, int64_t rows, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
            const float* bias, float* y, int64_t y_stride) {
  const bool pairs = w.dtype == DType::BFloat16;
  const int64_t steps = pairs ? w.stored_cols() / 2 : w.cols;
  const int64_t n_end = std::min(end_panel * kPanelWidth, w.rows);
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t n = first_panel * kPanelWidth; n < n_end; ++n) {
      float sum = 0.0f;
      for (int64_t s = 0; s < steps; ++s) {
        const uint32_t unit = packed_unit(packed_x, steps, m, s);
        if (pairs) {
          sum += bf16_to_f32(uint16_t(unit)) * w.get(n, 2 * s);
          if (2 * s + 1 < w.cols) sum += bf16_to_f32(uint16_t(unit >> 16)) * w.get(n, 2 * s + 1);
        } else {
          // int8: accumulate the integers, scale once, as the fast kernels do.
          sum += unit_as_float(unit) * (w.dtype == DType::Int8 ? load_as_f32(w.data, w.dtype, w.offset(n, s)) : w.get(n, s));
        }
      }
      if (w.dtype == DType::Int8) sum *= w.scales[size_t(n)];
      y[m * y_stride + n] = sum + (bias != nullptr ? bias[n] : 0.0f);
    }
  }
}

void key_scores(const float* q, const float* keys, int64_t count, int64_t d, float* out) {
  for (int64_t j = 0; j < count; ++j) {
    float sum = 0.0f;
    for (int64_t c = 0; c < d; ++c) sum += q[c] * keys[j * d + c];
    out[j] = sum;
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

double peak_flops(int64_t iterations, bool) {
  float acc[8] = {1.0f, 1.001f, 1.002f, 1.003f, 1.004f, 1.005f, 1.006f, 1.007f};
  for (int64_t i = 0; i < iterations; ++i) {
    for (float& a : acc) a = a * 0.999999f + 1e-7f;
  }
  volatile float sink = acc[0] + acc[7];
  (void)sink;
  return double(iterations) * 8 * 2;
}

float stream_sum(const float* data, int64_t n) {
  float partial[8] = {};
  for (int64_t i = 0; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) partial[j] += data[i + j];
  }
  return partial[0] + partial[1] + partial[2] + partial[3] + partial[4] + partial[5] + partial[6] + partial[7];
}

}  // namespace

const KernelTable& scalar_kernels() {
  static const KernelTable table{Isa::Scalar, matmul, matmul, matmul, matmul, key_scores,
                                 weighted_sum, exp_sum, gelu, peak_flops, stream_sum};
  return table;
}

}  // namespace falcon::cpu
