#include <cmath>

#include "../ops.h"

namespace falcon::cpu {

void rotary_tables(const ModelConfig& config, const int32_t* positions, int64_t count, int64_t sequence_length,
                   float* cos_out, float* sin_out) {
  const int64_t half = config.head_dim() / 2;
  const double dim = double(config.head_dim());
  double base = config.rope_theta;
  double position_scale = 1.0;
  if (config.rope_scaling == RopeScaling::Linear) position_scale = 1.0 / config.rope_scaling_factor;
  if (config.rope_scaling == RopeScaling::Dynamic && sequence_length > config.max_position_embeddings) {
    // Dynamic NTK: stretch the base once the sequence outgrows the trained context.
    const double factor = config.rope_scaling_factor;
    base *= std::pow(factor * double(sequence_length) / double(config.max_position_embeddings) - (factor - 1.0),
                     dim / (dim - 2.0));
  }
  // Angles in double, rounded once: the reference tables are exact up to float32 rounding.
  for (int64_t t = 0; t < count; ++t) {
    const double position = double(positions[t]) * position_scale;
    for (int64_t i = 0; i < half; ++i) {
      const double angle = position / std::pow(base, double(2 * i) / dim);
      cos_out[t * half + i] = float(std::cos(angle));
      sin_out[t * half + i] = float(std::sin(angle));
    }
  }
}

void apply_rotary(float* heads, int64_t num_heads, int64_t head_dim, const float* cos_row, const float* sin_row) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < num_heads; ++h) {
    float* v = heads + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float first = v[i];
      const float second = v[i + half];
      v[i] = first * cos_row[i] - second * sin_row[i];
      v[i + half] = second * cos_row[i] + first * sin_row[i];
    }
  }
}

}  // namespace falcon::cpu
