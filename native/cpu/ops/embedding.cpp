#include "../ops.h"

namespace falcon::cpu {

void embedding(const WeightMatrix& table, const int32_t* ids, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    float* dest = out + i * table.cols;
    for (int64_t c = 0; c < table.cols; ++c) dest[c] = table.get(ids[i], c);
  }
}

}  // namespace falcon::cpu
