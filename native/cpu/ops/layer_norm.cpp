#include "../../core/thread_pool.h"
#include "../ops.h"

namespace falcon::cpu {

void layer_norm(const float* x, int64_t rows, int64_t dim, const LayerNormParams& norm, float* y) {
  const KernelTable& table = kernels();
  current_thread_pool()->parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) table.layer_norm_row(x + r * dim, dim, norm.gamma, norm.beta, norm.epsilon, y + r * dim);
  });
}

}  // namespace falcon::cpu
