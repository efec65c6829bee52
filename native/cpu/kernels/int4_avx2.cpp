// int4 kernels for AVX2 (weights.h has the layout). Per group of 32 inputs and quarter panel of 8
// outputs, each 32-byte load holds two steps' nibbles: masked and shifted, they are the unsigned
// operand of vpmaddubsw against the row's broadcast int8 quad. The 16-bit pair sums of a whole group
// cannot overflow (8 steps · 2 · 15 · 127 < 2^15), so they are widened (vpmaddwd by ones) once per group,
// then scaled into a float32 tile.
#include "../cpu_features.h"

#if FALCON_X86

#include <immintrin.h>

#include <algorithm>
#include <cmath>

// As in avx2.cpp: the target applies after the standard headers, the project headers follow it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC target("avx2,fma,f16c")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

#include "kernels.h"
#include "avx2_common.h"

namespace falcon::cpu {
namespace {

constexpr int64_t kGroupSteps = kInt4Group / 4;

// Rows (≤ kPackedRows) of one packed row block times one panel, into tile[Rows][32]. `packed` is the
// block's units, block_scales and group_sums its first row's (rows quant_blocks and groups apart).
// A pass covers Quarters quarter panels (8 outputs each) of a group: all 4 for up to 2 rows, so each
// row's quads are broadcast once a step; one for more rows, whose accumulators would not fit otherwise.
template <int Rows>
FALCON_NOINLINE void micro_i4(const uint32_t* packed, const uint8_t* panel, int64_t steps, int64_t groups,
                              const float* block_scales, int64_t quant_blocks, const int32_t* group_sums, float* tile) {
  constexpr int Quarters = Rows <= 2 ? 4 : 1;
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* group = panel + size_t(g) * kInt4GroupBytes;
    const int64_t count = std::min(kGroupSteps, steps - g * kGroupSteps);  // 8 but in a short last group
    const uint32_t* units = packed + g * kGroupSteps * kPackedRows;
    const __m256i* nibbles = reinterpret_cast<const __m256i*>(group);
    if (Rows == 1) fetch_stream_ahead<int((kInt4GroupBytes + 63) / 64)>(group);
    for (int first_quarter = 0; first_quarter < 4; first_quarter += Quarters) {
      __m256i sums[Quarters * Rows];  // [quarter][row]
#pragma GCC unroll 8
      for (int i = 0; i < Quarters * Rows; ++i) sums[i] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) {
        // A short last group has neither step t nor t + 4 from here on; the units past it are not ours to read.
        if (t >= count) break;
        __m256i low_quads[Rows], high_quads[Rows];
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          low_quads[r] = _mm256_set1_epi32(int(units[t * kPackedRows + r]));
          high_quads[r] = t + 4 < count ? _mm256_set1_epi32(int(units[(t + 4) * kPackedRows + r])) : low_quads[r];
        }
#pragma GCC unroll 4
        for (int q = 0; q < Quarters; ++q) {
          const int quarter = first_quarter + q;
          const __m256i v = _mm256_loadu_si256(nibbles + (2 * t + quarter / 2) * 2 + quarter % 2);
          const __m256i low = _mm256_and_si256(v, low_nibbles);
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibbles);
#pragma GCC unroll 8
          for (int r = 0; r < Rows; ++r) sums[q * Rows + r] = _mm256_add_epi16(sums[q * Rows + r], _mm256_maddubs_epi16(low, low_quads[r]));
          if (t + 4 < count) {
#pragma GCC unroll 8
            for (int r = 0; r < Rows; ++r) sums[q * Rows + r] = _mm256_add_epi16(sums[q * Rows + r], _mm256_maddubs_epi16(high, high_quads[r]));
          }
        }
      }
#pragma GCC unroll 4
      for (int q = 0; q < Quarters; ++q) {
        const int quarter = first_quarter + q;
        const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group + kInt4NibbleBytes) + quarter));
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          const __m256i exact = _mm256_sub_epi32(_mm256_madd_epi16(sums[q * Rows + r], _mm256_set1_epi16(1)),
                                                 _mm256_set1_epi32(8 * group_sums[r * groups + g]));
          const __m256 scale = _mm256_mul_ps(scales, _mm256_set1_ps(block_scales[r * quant_blocks + g * kGroupSteps / kQuantSteps]));
          float* out = tile + r * kPanelWidth + quarter * 8;
          const __m256 value = _mm256_cvtepi32_ps(exact);
          _mm256_store_ps(out, g == 0 ? _mm256_mul_ps(value, scale) : _mm256_fmadd_ps(value, scale, _mm256_load_ps(out)));
        }
      }
    }
  }
}

}  // namespace

void int4_store_tile_avx2(const float* tile, int rows, int64_t n0, int outputs, const Epilogue& epilogue, float* y,
                          int64_t y_stride) {
  for (int r = 0; r < rows; ++r) {
    alignas(32) float values[kPanelWidth];
    for (int i = 0; i < 4; ++i) {
      __m256 v = _mm256_loadu_ps(tile + r * kPanelWidth + 8 * i);
      if (epilogue.bias != nullptr) v = _mm256_add_ps(v, load_f32(epilogue.bias + n0 + 8 * i, outputs - 8 * i));
      if (epilogue.gelu) v = gelu256(v);
      _mm256_store_ps(values + 8 * i, v);
    }
    float* out = y + r * y_stride + n0;
    for (int j = 0; j < outputs; ++j) out[j] = epilogue.accumulate ? out[j] + values[j] : values[j];
  }
}

// Panels outer, row blocks inner, as the other matmuls (avx2.cpp): a panel stays in cache while every
// row block passes over it.
void matmul_i4_avx2(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                    const Epilogue& epilogue, float* y, int64_t y_stride) {
  alignas(32) float tile[kPackedRows * kPanelWidth];
  for (int64_t p = first_panel; p < end_panel; ++p) {
    const int64_t n0 = p * kPanelWidth;
    const int outputs = int(std::min<int64_t>(kPanelWidth, w.rows - n0));
    const uint8_t* panel = static_cast<const uint8_t*>(w.panel(p));
    for (int64_t block = 0; block * kPackedRows < x.rows; ++block) {
      const int block_rows = int(std::min<int64_t>(kPackedRows, x.rows - block * kPackedRows));
      with_count<kPackedRows>(block_rows, [&](auto rows) {
        micro_i4<decltype(rows)::value>(x.units + block * x.steps * kPackedRows, panel, x.steps, x.int4_groups,
                                        x.block_scales + block * kPackedRows * x.quant_blocks, x.quant_blocks,
                                        x.group_sums + block * kPackedRows * x.int4_groups, tile);
      });
      int4_store_tile_avx2(tile, block_rows, n0, outputs, epilogue, y + block * kPackedRows * y_stride, y_stride);
    }
  }
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif

#endif  // FALCON_X86
