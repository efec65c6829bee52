#include <cmath>

#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void layer_norm_statistics(const float* row, int64_t dim, float epsilon, float* mean, float* inverse_std) {
  // Double accumulators: the mean of thousands of activations must not drift with their magnitude.
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += row[i];
  const double mean_d = sum / double(dim);
  double squares = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    const double centred = row[i] - mean_d;
    squares += centred * centred;
  }
  *mean = float(mean_d);
  *inverse_std = float(1.0 / std::sqrt(squares / double(dim) + double(epsilon)));
}

void layer_norm(const float* x, int64_t rows, int64_t dim, const LayerNormParams& norm, float* y) {
  global_thread_pool().parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = x + r * dim;
      float* out = y + r * dim;
      float mean, inverse_std;
      layer_norm_statistics(in, dim, norm.epsilon, &mean, &inverse_std);
      for (int64_t i = 0; i < dim; ++i) out[i] = (in[i] - mean) * inverse_std * norm.gamma[i] + norm.beta[i];
    }
  });
}

}  // namespace falcon::cpu
