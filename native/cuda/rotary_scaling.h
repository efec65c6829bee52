#pragma once
// The rotary base and position scale of one sequence, with the config's scaling folded in: what the
// rotary_tables kernel takes per row. The same arithmetic as cpu::rotary_tables (tested against it
// for every scaling in test/cuda-ops.test.ts).
#include <cmath>
#include <cstdint>

#include "../core/model_config.h"

namespace falcon::cuda {

struct RotaryScaling {
  double base = 10000.0;
  double position_scale = 1.0;
};

inline RotaryScaling rotary_scaling(const ModelConfig& config, int64_t sequence_length) {
  const double dim = double(config.head_dim());
  RotaryScaling scaling{config.rope_theta, 1.0};
  if (config.rope_scaling == RopeScaling::Linear) scaling.position_scale = 1.0 / config.rope_scaling_factor;
  if (config.rope_scaling == RopeScaling::Dynamic && sequence_length > config.max_position_embeddings) {
    const double factor = config.rope_scaling_factor;
    scaling.base *= std::pow(factor * double(sequence_length) / double(config.max_position_embeddings) - (factor - 1.0),
                             dim / (dim - 2.0));
  }
  return scaling;
}

}  // namespace falcon::cuda
