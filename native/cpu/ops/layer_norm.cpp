#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void layer_norm(const float* x, const int64_t* rows, int64_t count, int64_t dim, const LayerNormParams& norm, float* y) {
  const KernelTable& table = kernels();
  current_thread_pool()->parallel_for(count, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) table.layer_norm_row(x + rows[i] * dim, dim, norm.gamma, norm.beta, norm.epsilon, y + i * dim);
  });
}

}  // namespace falcon::cpu
