#include "../../core/thread_pool.h"
#include "../kernels/kernels.h"
#include "../ops.h"

namespace falcon::cpu {

void gelu(float* x, int64_t count) {
  const KernelTable& table = kernels();
  global_thread_pool().parallel_for(count, 16384, [&](int64_t begin, int64_t end) { table.gelu(x + begin, end - begin); });
}

}  // namespace falcon::cpu
