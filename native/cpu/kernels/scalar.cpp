// The reference kernels: plain loops, no intrinsics. Every other table is tested against these.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../../core/dtype.h"
#include "kernels.h"

namespace falcon::cpu {
namespace {

// The unit of packed row m, step s.
inline uint32_t packed_unit(const PackedRows& x, int64_t m, int64_t s) {
  return x.units[(m / kPackedRows * x.steps + s) * kPackedRows + m % kPackedRows];
}

inline float unit_as_float(uint32_t unit) {
  float value;
  std::memcpy(&value, &unit, sizeof value);
  return value;
}

void layer_norm_row(const float* in, int64_t dim, const float* gamma, const float* beta, float epsilon, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += in[i];
  const double mean_d = sum / double(dim);
  double squares = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    const double centred = in[i] - mean_d;
    squares += centred * centred;
  }
  const float mean = float(mean_d);
  const float inverse_std = float(1.0 / std::sqrt(squares / double(dim) + double(epsilon)));
  for (int64_t i = 0; i < dim; ++i) out[i] = (in[i] - mean) * inverse_std * gamma[i] + beta[i];
}

float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

// Σ_k x[m][k] · w(n, k) for int8: exact integer sums per quantisation block, added up in float32.
float int8_dot(const PackedRows& x, const WeightMatrix& w, int64_t m, int64_t n) {
  const uint8_t* weights = static_cast<const uint8_t*>(w.data);
  float sum = 0.0f;
  for (int64_t block = 0; block < x.quant_blocks; ++block) {
    int32_t block_sum = 0;
    for (int64_t s = block * kQuantSteps; s < std::min(x.steps, (block + 1) * kQuantSteps); ++s) {
      const uint32_t unit = packed_unit(x, m, s);
      for (int64_t j = 0; j < 4; ++j) block_sum += int32_t(int8_t(unit >> (8 * j))) * (int32_t(weights[w.offset(n, 4 * s + j)]) - 128);
    }
    sum += float(block_sum) * x.block_scales[m * x.quant_blocks + block];
  }
  return sum * w.scales[size_t(n)];
}

void matmul(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel, const Epilogue& epilogue,
            float* y, int64_t y_stride) {
  const int64_t n_end = std::min(end_panel * kPanelWidth, w.rows);
  for (int64_t m = 0; m < x.rows; ++m) {
    for (int64_t n = first_panel * kPanelWidth; n < n_end; ++n) {
      float sum = 0.0f;
      if (w.dtype == DType::Int8) {
        sum = int8_dot(x, w, m, n);
      } else if (w.dtype == DType::BFloat16) {
        for (int64_t s = 0; s < x.steps; ++s) {
          const uint32_t unit = packed_unit(x, m, s);
          sum += bf16_to_f32(uint16_t(unit)) * w.get(n, 2 * s);
          if (2 * s + 1 < w.cols) sum += bf16_to_f32(uint16_t(unit >> 16)) * w.get(n, 2 * s + 1);
        }
      } else {
        for (int64_t s = 0; s < x.steps; ++s) sum += unit_as_float(packed_unit(x, m, s)) * w.get(n, s);
      }
      if (epilogue.bias != nullptr) sum += epilogue.bias[n];
      if (epilogue.gelu) sum = gelu(sum);
      float& out = y[m * y_stride + n];
      out = epilogue.accumulate ? out + sum : sum;
    }
  }
}

void quantise_row(const float* x, int64_t cols, int64_t quant_blocks, uint32_t* units, float* scales, int32_t* sums) {
  const int64_t steps = (cols + 3) / 4;
  for (int64_t block = 0; block < quant_blocks; ++block) {
    const int64_t k_begin = block * kQuantSteps * 4;
    const int64_t k_end = std::min(cols, k_begin + kQuantSteps * 4);
    float largest = 0.0f;
    for (int64_t k = k_begin; k < k_end; ++k) largest = std::max(largest, std::fabs(x[k]));
    const float inverse = largest > 0.0f ? 127.0f / largest : 0.0f;
    scales[block] = largest / 127.0f;
    int32_t sum = 0;
    for (int64_t s = block * kQuantSteps; s < std::min(steps, (block + 1) * kQuantSteps); ++s) {
      uint32_t unit = 0;
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t k = 4 * s + j;
        const int32_t q = k < cols ? int32_t(std::lrintf(std::clamp(x[k] * inverse, -127.0f, 127.0f))) : 0;
        sum += q;
        unit |= uint32_t(uint8_t(int8_t(q))) << (8 * j);
      }
      units[s * kPackedRows] = unit;
    }
    sums[block] = sum;
  }
}

// A stored key or value component as float32 (exact for every KV element type).
inline float widen(float x) { return x; }
inline float widen(Bf16 x) { return bf16_to_f32(x.bits); }
inline float widen(F16 x) { return f16_to_f32(x.bits); }

template <typename Element>
void key_scores_blocked(const float* q, int64_t q_stride, int64_t queries, const void* const* key_blocks, int64_t count,
                        int64_t d, float* scores, int64_t score_stride) {
  for (int64_t g = 0; g < queries; ++g) {
    for (int64_t j = 0; j < count; ++j) {
      const Element* key = static_cast<const Element*>(key_blocks[j / kKeyBlock]) + j % kKeyBlock;
      float sum = 0.0f;
      for (int64_t c = 0; c < d; ++c) sum += q[g * q_stride + c] * widen(key[c * kKeyBlock]);
      scores[g * score_stride + j] = sum;
    }
  }
}

template <typename Element>
void weighted_sum(const float* p, int64_t p_stride, int64_t queries, const void* const* value_blocks, int64_t count,
                  int64_t d, float* out, int64_t out_stride) {
  for (int64_t g = 0; g < queries; ++g) {
    float* row = out + g * out_stride;
    for (int64_t c = 0; c < d; ++c) row[c] = 0.0f;
    for (int64_t j = 0; j < count; ++j) {
      const Element* value = static_cast<const Element*>(value_blocks[j / kKeyBlock]) + j % kKeyBlock * d;
      for (int64_t c = 0; c < d; ++c) row[c] += p[g * p_stride + j] * widen(value[c]);
    }
  }
}

float mask_scores(float* scores, const uint8_t* valid, const int32_t* position, int64_t count, float slope, float scale) {
  float largest = -INFINITY;
  for (int64_t j = 0; j < count; ++j) {
    scores[j] = valid[j] ? (scores[j] + slope * float(position[j])) * scale : -INFINITY;
    largest = std::max(largest, scores[j]);
  }
  return largest;
}

float exp_sum(float* x, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

double peak_ops(int64_t iterations, PeakOp) {
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
  static const KernelTable table{Isa::Scalar, matmul, matmul, matmul, matmul, INT64_MAX, quantise_row, layer_norm_row,
                                 {key_scores_blocked<float>, weighted_sum<float>},
                                 {key_scores_blocked<Bf16>, weighted_sum<Bf16>},
                                 {key_scores_blocked<F16>, weighted_sum<F16>},
                                 mask_scores, exp_sum, peak_ops, stream_sum};
  return table;
}

}  // namespace falcon::cpu
