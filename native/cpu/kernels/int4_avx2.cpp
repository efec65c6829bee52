// int4 kernels for AVX2 (weights.h has the layout). Per group of 32 inputs and quarter panel of 8
// outputs, each 32-byte load holds two steps' nibbles: masked and shifted, they are the unsigned
// operand of a byte dot product against the row's broadcast int8 quad. Plain AVX2 uses vpmaddubsw: the
// 16-bit pair sums of a whole group cannot overflow (8 steps · 2 · 15 · 127 < 2^15), so they are
// widened (vpmaddwd by ones) once per group. With AVX-VNNI, vpdpbusd adds the products straight into
// int32 sums that start at −8 · Σ q_x of the group, as the AVX-512 kernel does. Either way the group's
// exact sums are then scaled into a float32 tile.
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

// One or two rows of a packed row block times one panel, or a lone row times two panels
// (panel_bytes apart), into tile[slot][32]: slot j is row j, or the lone row against panel j.
// `packed` points at the first row's unit of step 0 (kPackedRows units a step), block_scales and
// group_sums at its first (rows quant_blocks and groups apart). Per step, each row's quads are
// broadcast once and meet all 4 quarter panels, so the nibbles are unpacked once per two rows: taller
// tiles, whose accumulators would not fit beside all four quarters, had to take the quarters one at a
// time and broadcast every quad four times, and prefilled at half this rate (below). A lone decode row
// streams two panels at once: two runs of prefetches keep more of memory's latency covered than one.
template <int Rows, int Panels, bool Vnni>
FALCON_NOINLINE void micro_i4(const uint32_t* packed, const uint8_t* panel, size_t panel_bytes, int64_t steps,
                              int64_t groups, const float* block_scales, int64_t quant_blocks, const int32_t* group_sums,
                              float* tile) {
  constexpr int Slots = Rows * Panels;
  static_assert(Slots <= 2 && (Rows == 1 || Panels == 1), "int4 tiles are one or two rows of a panel, or a row of two panels");
  // The row and the panel of slot j.
  constexpr int kSlotRow[2] = {0, Panels > 1 ? 0 : 1};
  constexpr int kSlotPanel[2] = {0, Panels > 1 ? 1 : 0};
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const auto dot = [](__m256i& sums, __m256i nibbles, __m256i quads) {
    if constexpr (Vnni) dot_bytes_vex(sums, nibbles, quads);
    else sums = _mm256_add_epi16(sums, _mm256_maddubs_epi16(nibbles, quads));
  };
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* group[2] = {panel + size_t(g) * kInt4GroupBytes, panel + (Panels > 1 ? panel_bytes : 0) + size_t(g) * kInt4GroupBytes};
    const int64_t count = std::min(kGroupSteps, steps - g * kGroupSteps);  // 8 but in a short last group
    const uint32_t* units = packed + g * kGroupSteps * kPackedRows;
    if (Rows == 1) {
#pragma GCC unroll 2
      for (int j = 0; j < Panels; ++j) fetch_stream_ahead<int((kInt4GroupBytes + 63) / 64)>(group[j]);
    }
    __m256i sums[4 * Slots];  // [quarter][slot]: int16 pair sums, or with VNNI the exact int32 sums
#pragma GCC unroll 8
    for (int i = 0; i < 4 * Slots; ++i) {
      sums[i] = Vnni ? _mm256_set1_epi32(-8 * group_sums[kSlotRow[i % Slots] * groups + g]) : _mm256_setzero_si256();
    }
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      // A short last group has neither step t nor t + 4 from here on; the units past it are not ours to read.
      if (t >= count) break;
      __m256i low_quads[Rows], high_quads[Rows];
#pragma GCC unroll 2
      for (int r = 0; r < Rows; ++r) {
        low_quads[r] = _mm256_set1_epi32(int(units[t * kPackedRows + r]));
        high_quads[r] = t + 4 < count ? _mm256_set1_epi32(int(units[(t + 4) * kPackedRows + r])) : low_quads[r];
      }
#pragma GCC unroll 4
      for (int quarter = 0; quarter < 4; ++quarter) {
#pragma GCC unroll 2
        for (int j = 0; j < Panels; ++j) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group[j]) + (2 * t + quarter / 2) * 2 + quarter % 2);
          const __m256i low = _mm256_and_si256(v, low_nibbles);
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibbles);
#pragma GCC unroll 2
          for (int r = 0; r < Rows; ++r) dot(sums[quarter * Slots + r + j], low, low_quads[r]);
          if (t + 4 < count) {
#pragma GCC unroll 2
            for (int r = 0; r < Rows; ++r) dot(sums[quarter * Slots + r + j], high, high_quads[r]);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int quarter = 0; quarter < 4; ++quarter) {
#pragma GCC unroll 2
      for (int j = 0; j < Slots; ++j) {
        const int r = kSlotRow[j];
        const __m256 scales =
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group[kSlotPanel[j]] + kInt4NibbleBytes) + quarter));
        const __m256i exact = Vnni ? sums[quarter * Slots + j]
                                   : _mm256_sub_epi32(_mm256_madd_epi16(sums[quarter * Slots + j], _mm256_set1_epi16(1)),
                                                      _mm256_set1_epi32(8 * group_sums[r * groups + g]));
        const __m256 scale = _mm256_mul_ps(scales, _mm256_set1_ps(block_scales[r * quant_blocks + g * kGroupSteps / kQuantSteps]));
        float* out = tile + j * kPanelWidth + quarter * 8;
        const __m256 value = _mm256_cvtepi32_ps(exact);
        _mm256_store_ps(out, g == 0 ? _mm256_mul_ps(value, scale) : _mm256_fmadd_ps(value, scale, _mm256_load_ps(out)));
      }
    }
  }
}

}  // namespace

void int4_store_tile_avx2(const float* tile, int rows, const WeightMatrix& w, int64_t p, const Epilogue& epilogue, float* y,
                          int64_t y_stride) {
  const TileStore store = tile_store(w, p, 0, epilogue, nullptr, y, y_stride);
  for (int r = 0; r < rows; ++r) {
    const float* sums = tile + r * kPanelWidth;
    const __m256 row[4] = {_mm256_loadu_ps(sums), _mm256_loadu_ps(sums + 8), _mm256_loadu_ps(sums + 16), _mm256_loadu_ps(sums + 24)};
    store(row, r);
  }
}

namespace {

// Panels outer, row blocks inner, as the other matmuls (avx2.cpp): a panel stays in cache while every
// row block passes over it, two rows at a time. Two-row tiles took AVX2 int4 prefill (pp512, falcon-rw-1b's
// shape, 2 threads) from 93 to 137 tok/s with vpmaddubsw and from 104 to 185–191 with AVX-VNNI. A lone
// row (decode) takes the panels two at a time.
template <bool Vnni>
void matmul_i4(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel, const Epilogue& epilogue,
               float* y, int64_t y_stride) {
  constexpr int kTileRows = 2;
  alignas(32) float tile[kPackedRows * kPanelWidth];  // a row block's
  const size_t panel_bytes = w.panel_bytes();
  if (x.rows == 1) {
    for_panel_pairs(first_panel, end_panel, [&](int64_t p) {
      // The pair's biases, read by its stores a micro-kernel later, would miss (fetch_lines).
      if (epilogue.bias != nullptr) fetch_lines(epilogue.bias + p * kPanelWidth, 2 * kPanelWidth * int64_t(sizeof(float)));
      micro_i4<1, 2, Vnni>(x.units, static_cast<const uint8_t*>(w.panel(p)), panel_bytes, x.steps, x.int4_groups, x.block_scales,
                           x.quant_blocks, x.group_sums, tile);
      int4_store_tile_avx2(tile, 1, w, p, epilogue, y, y_stride);
      int4_store_tile_avx2(tile + kPanelWidth, 1, w, p + 1, epilogue, y, y_stride);
    }, [&](int64_t p) {
      micro_i4<1, 1, Vnni>(x.units, static_cast<const uint8_t*>(w.panel(p)), panel_bytes, x.steps, x.int4_groups, x.block_scales,
                           x.quant_blocks, x.group_sums, tile);
      int4_store_tile_avx2(tile, 1, w, p, epilogue, y, y_stride);
    });
    return;
  }
  for (int64_t p = first_panel; p < end_panel; ++p) {
    const uint8_t* panel = static_cast<const uint8_t*>(w.panel(p));
    for (int64_t block = 0; block * kPackedRows < x.rows; ++block) {
      const int block_rows = int(std::min<int64_t>(kPackedRows, x.rows - block * kPackedRows));
      for (int r0 = 0; r0 < block_rows; r0 += kTileRows) {
        with_count<kTileRows>(std::min(kTileRows, block_rows - r0), [&](auto rows) {
          const int64_t first_row = block * kPackedRows + r0;
          micro_i4<decltype(rows)::value, 1, Vnni>(x.units + block * x.steps * kPackedRows + r0, panel, panel_bytes, x.steps,
                                                   x.int4_groups, x.block_scales + first_row * x.quant_blocks, x.quant_blocks,
                                                   x.group_sums + first_row * x.int4_groups, tile + r0 * kPanelWidth);
        });
      }
      int4_store_tile_avx2(tile, block_rows, w, p, epilogue, y + block * kPackedRows * y_stride, y_stride);
    }
  }
}

}  // namespace

void matmul_i4_avx2(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                    const Epilogue& epilogue, float* y, int64_t y_stride) {
  matmul_i4<false>(x, w, first_panel, end_panel, epilogue, y, y_stride);
}

void matmul_i4_avx_vnni(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                        const Epilogue& epilogue, float* y, int64_t y_stride) {
  matmul_i4<true>(x, w, first_panel, end_panel, epilogue, y, y_stride);
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif

#endif  // FALCON_X86
