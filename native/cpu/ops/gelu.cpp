#include <cmath>

#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void gelu(float* x, int64_t count) {
  global_thread_pool().parallel_for(count, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
  });
}

}  // namespace falcon::cpu
