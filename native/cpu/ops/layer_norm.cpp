#include <cmath>

#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void layer_norm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float epsilon,
                float* y) {
  global_thread_pool().parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = x + r * dim;
      float* out = y + r * dim;
      // Double accumulators: the mean of thousands of activations must not drift with their magnitude.
      double sum = 0.0;
      for (int64_t i = 0; i < dim; ++i) sum += in[i];
      const double mean = sum / double(dim);
      double squares = 0.0;
      for (int64_t i = 0; i < dim; ++i) {
        const double centred = in[i] - mean;
        squares += centred * centred;
      }
      const float inverse_std = float(1.0 / std::sqrt(squares / double(dim) + double(epsilon)));
      const float mean_f = float(mean);
      for (int64_t i = 0; i < dim; ++i) out[i] = (in[i] - mean_f) * inverse_std * gamma[i] + beta[i];
    }
  });
}

}  // namespace falcon::cpu
