#include <cmath>

#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void layer_norm_row(const float* in, int64_t dim, const LayerNormParams& norm, float* out) {
  // Double accumulators: the mean of thousands of activations must not drift with their magnitude.
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += in[i];
  const double mean_d = sum / double(dim);
  double squares = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    const double centred = in[i] - mean_d;
    squares += centred * centred;
  }
  const float mean = float(mean_d);
  const float inverse_std = float(1.0 / std::sqrt(squares / double(dim) + double(norm.epsilon)));
  for (int64_t i = 0; i < dim; ++i) out[i] = (in[i] - mean) * inverse_std * norm.gamma[i] + norm.beta[i];
}

void layer_norm(const float* x, int64_t rows, int64_t dim, const LayerNormParams& norm, float* y) {
  global_thread_pool().parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) layer_norm_row(x + r * dim, dim, norm, y + r * dim);
  });
}

}  // namespace falcon::cpu
