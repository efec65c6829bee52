// The int4 reference kernel: plain loops, no intrinsics. int4_avx2.cpp and int4_avx512.cpp are tested against it.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../../core/dtype.h"
#include "kernels.h"

namespace falcon::cpu {

void matmul_i4_scalar(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                      const Epilogue& epilogue, float* y, int64_t y_stride) {
  constexpr int64_t kGroupSteps = kInt4Group / 4;
  const int64_t n_end = std::min(end_panel * kPanelWidth, w.rows);
  for (int64_t m = 0; m < x.rows; ++m) {
    const uint32_t* row_units = x.units + (m / kPackedRows) * x.steps * kPackedRows + m % kPackedRows;
    for (int64_t n = first_panel * kPanelWidth; n < n_end; ++n) {
      const int64_t o = n % kPanelWidth;
      float sum = 0.0f;
      for (int64_t g = 0; g < x.int4_groups; ++g) {
        const uint8_t* group = w.int4_group(n, g);
        int32_t group_sum = 0;
        for (int64_t s = g * kGroupSteps; s < std::min(x.steps, (g + 1) * kGroupSteps); ++s) {
          const uint32_t unit = row_units[s * kPackedRows];
          for (int64_t i = 0; i < 4; ++i) {
            const int64_t j = 4 * s + i - g * kInt4Group;
            const int q = (group[int4_nibble_byte(o, j % 16)] >> (j < 16 ? 0 : 4)) & 15;
            group_sum += int32_t(int8_t(uint8_t(unit >> (8 * i)))) * (q - 8);
          }
        }
        uint16_t scale_bits;
        std::memcpy(&scale_bits, group + kInt4NibbleBytes + size_t(o) * sizeof(uint16_t), sizeof scale_bits);
        const float activation_scale = x.block_scales[m * x.quant_blocks + g * kGroupSteps / kQuantSteps];
        // Fused, as the vector kernels add each group: the same float32 roundings, group by group.
        sum = std::fma(float(group_sum), f16_to_f32(scale_bits) * activation_scale, sum);
      }
      if (epilogue.bias != nullptr) sum += epilogue.bias[n];
      if (epilogue.gelu) sum = 0.5f * sum * (1.0f + std::erf(sum * 0.70710678118654752f));
      float& out = y[m * y_stride + n];
      out = epilogue.accumulate ? out + sum : sum;
    }
  }
}

}  // namespace falcon::cpu
