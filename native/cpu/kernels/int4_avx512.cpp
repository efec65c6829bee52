// int4 kernels for AVX-512 with VNNI (weights.h has the layout). Per group of 32 inputs, each 64-byte
// load holds two steps' nibbles of 16 outputs: masked and shifted, they are the unsigned operand of
// vpdpbusd against the row's broadcast int8 quad. The accumulators start at −8 · Σ q_x of the group,
// which leaves exactly Σ q_x · (q_w − 8); each group's sums are then scaled into a float32 tile.
// This file is compiled for AVX-512 but only called after cpu_features() says the CPU runs it.
#include "../cpu_features.h"

#if FALCON_X86

#include <immintrin.h>

#include <algorithm>

// As in avx512.cpp: the target applies after the standard headers, the project headers follow it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c"))), apply_to = function)
#endif

#include "kernels.h"
#include "avx512_common.h"
#include "fetch_ahead.h"

namespace falcon::cpu {
namespace {

constexpr int64_t kGroupSteps = kInt4Group / 4;

// Rows (≤ kPackedRows) of one packed row block times one panel, or a lone row times two panels
// (panel_bytes apart), into tile[slot][32]: slot j is row j, or the lone row against panel j.
// `packed` is the block's units, block_scales and group_sums its first row's (rows quant_blocks and
// groups apart). Up to 4 slots (decode), the high nibbles are only masked, not shifted (16 q each), into
// accumulators of their own, shifted back once per group (exact: every product is a multiple of 16):
// one operation less per vector, and two dependency chains per accumulator pair where one row has few
// to overlap. 8 rows need the registers for one pair of accumulators a row. A lone row streams its
// panels from memory, two at a time, and asks for each group's lines 4 KiB ahead, as the AVX2 kernel
// does (in alternating rounds of one process, 24 matrices of 8192×2048 or 2048×8192, far more than the
// L3, 2 threads: one panel with the prefetch gained 0–5 % bandwidth in every round over one without).
template <int Rows, int Panels>
FALCON_NOINLINE void micro_i4(const uint32_t* packed, const uint8_t* panel, size_t panel_bytes, int64_t steps, int64_t groups,
                              const float* block_scales, int64_t quant_blocks, const int32_t* group_sums, float* tile) {
  constexpr int Slots = Rows * Panels;
  static_assert(Rows == 1 || Panels == 1, "a tile is rows of one panel or a row of two panels");
  // The row and the panel of slot j.
  const auto slot_row = [](int j) { return Panels > 1 ? 0 : j; };
  const auto slot_panel = [](int j) { return Panels > 1 ? j : 0; };
  constexpr bool kSplit = Slots <= 4;
  constexpr int kHigh = kSplit ? 2 * Slots : 0;  // where the high-nibble accumulators start
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
  const __m512i high_nibbles = _mm512_set1_epi8(int8_t(0xf0));
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* group[2] = {panel + size_t(g) * kInt4GroupBytes, panel + (Panels > 1 ? panel_bytes : 0) + size_t(g) * kInt4GroupBytes};
    const int64_t count = std::min(kGroupSteps, steps - g * kGroupSteps);  // 8 but in a short last group
    const uint32_t* units = packed + g * kGroupSteps * kPackedRows;
    if (Rows == 1) {
#pragma GCC unroll 2
      for (int j = 0; j < Panels; ++j) fetch_stream_ahead<int((kInt4GroupBytes + 63) / 64)>(group[j]);
    }
    __m512i sums[(kSplit ? 4 : 2) * Slots];
#pragma GCC unroll 8
    for (int j = 0; j < Slots; ++j) {
      sums[2 * j] = sums[2 * j + 1] = _mm512_set1_epi32(-8 * group_sums[slot_row(j) * groups + g]);
      if (kSplit) sums[kHigh + 2 * j] = sums[kHigh + 2 * j + 1] = _mm512_setzero_si512();
    }
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      __m512i low0[Panels], low1[Panels], high0[Panels], high1[Panels];
#pragma GCC unroll 2
      for (int j = 0; j < Panels; ++j) {
        const __m512i v0 = _mm512_loadu_si512(group[j] + 2 * t * 64), v1 = _mm512_loadu_si512(group[j] + (2 * t + 1) * 64);
        low0[j] = _mm512_and_si512(v0, low_nibbles), low1[j] = _mm512_and_si512(v1, low_nibbles);
        high0[j] = kSplit ? _mm512_and_si512(v0, high_nibbles) : _mm512_and_si512(_mm512_srli_epi16(v0, 4), low_nibbles);
        high1[j] = kSplit ? _mm512_and_si512(v1, high_nibbles) : _mm512_and_si512(_mm512_srli_epi16(v1, 4), low_nibbles);
      }
      if (t < count) {
#pragma GCC unroll 8
        for (int j = 0; j < Slots; ++j) {
          const __m512i quads = broadcast_quad(units[t * kPackedRows + slot_row(j)]);
          dot_bytes(sums[2 * j], low0[slot_panel(j)], quads);
          dot_bytes(sums[2 * j + 1], low1[slot_panel(j)], quads);
        }
      }
      if (t + 4 < count) {
#pragma GCC unroll 8
        for (int j = 0; j < Slots; ++j) {
          const __m512i quads = broadcast_quad(units[(t + 4) * kPackedRows + slot_row(j)]);
          dot_bytes(sums[kHigh + 2 * j], high0[slot_panel(j)], quads);
          dot_bytes(sums[kHigh + 2 * j + 1], high1[slot_panel(j)], quads);
        }
      }
    }
    if (kSplit) {
#pragma GCC unroll 8
      for (int i = 0; i < 2 * Slots; ++i) sums[i] = _mm512_add_epi32(sums[i], _mm512_srai_epi32(sums[kHigh + i], 4));
    }
    __m512 scales0[Panels], scales1[Panels];
#pragma GCC unroll 2
    for (int j = 0; j < Panels; ++j) {
      scales0[j] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group[j] + kInt4NibbleBytes)));
      scales1[j] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group[j] + kInt4NibbleBytes) + 1));
    }
#pragma GCC unroll 8
    for (int j = 0; j < Slots; ++j) {
      const __m512 activation_scale = _mm512_set1_ps(block_scales[slot_row(j) * quant_blocks + g * kGroupSteps / kQuantSteps]);
      const __m512 scale0 = _mm512_mul_ps(scales0[slot_panel(j)], activation_scale);
      const __m512 scale1 = _mm512_mul_ps(scales1[slot_panel(j)], activation_scale);
      const __m512 value0 = _mm512_cvtepi32_ps(sums[2 * j]), value1 = _mm512_cvtepi32_ps(sums[2 * j + 1]);
      float* out = tile + j * kPanelWidth;
      if (g == 0) {
        _mm512_store_ps(out, _mm512_mul_ps(value0, scale0));
        _mm512_store_ps(out + 16, _mm512_mul_ps(value1, scale1));
      } else {
        _mm512_store_ps(out, _mm512_fmadd_ps(value0, scale0, _mm512_load_ps(out)));
        _mm512_store_ps(out + 16, _mm512_fmadd_ps(value1, scale1, _mm512_load_ps(out + 16)));
      }
    }
  }
}

}  // namespace

// Panels outer, row blocks inner, as the other matmuls (avx512.cpp): a panel stays in cache while
// every row block passes over it; a single row streams the panels from memory once, two at a time.
void matmul_i4_avx512(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                      const Epilogue& epilogue, float* y, int64_t y_stride) {
  alignas(64) float tile[kPackedRows * kPanelWidth];
  const size_t panel_bytes = w.panel_bytes();
  if (x.rows == 1) {
    for_panel_pairs(first_panel, end_panel, [&](int64_t p) {
      // The pair's biases, read by its stores a micro-kernel later, would miss (fetch_lines).
      if (epilogue.bias != nullptr) fetch_lines(epilogue.bias + p * kPanelWidth, 2 * kPanelWidth * int64_t(sizeof(float)));
      micro_i4<1, 2>(x.units, static_cast<const uint8_t*>(w.panel(p)), panel_bytes, x.steps, x.int4_groups, x.block_scales,
                     x.quant_blocks, x.group_sums, tile);
      int4_store_tile_avx2(tile, 1, w, p, epilogue, y, y_stride);
      int4_store_tile_avx2(tile + kPanelWidth, 1, w, p + 1, epilogue, y, y_stride);
    }, [&](int64_t p) {
      micro_i4<1, 1>(x.units, static_cast<const uint8_t*>(w.panel(p)), panel_bytes, x.steps, x.int4_groups, x.block_scales,
                     x.quant_blocks, x.group_sums, tile);
      int4_store_tile_avx2(tile, 1, w, p, epilogue, y, y_stride);
    });
    return;
  }
  for (int64_t p = first_panel; p < end_panel; ++p) {
    const uint8_t* panel = static_cast<const uint8_t*>(w.panel(p));
    for (int64_t block = 0; block * kPackedRows < x.rows; ++block) {
      const int block_rows = int(std::min<int64_t>(kPackedRows, x.rows - block * kPackedRows));
      with_count<kPackedRows>(block_rows, [&](auto rows) {
        micro_i4<decltype(rows)::value, 1>(x.units + block * x.steps * kPackedRows, panel, panel_bytes, x.steps, x.int4_groups,
                                           x.block_scales + block * kPackedRows * x.quant_blocks, x.quant_blocks,
                                           x.group_sums + block * kPackedRows * x.int4_groups, tile);
      });
      int4_store_tile_avx2(tile, block_rows, w, p, epilogue, y + block * kPackedRows * y_stride, y_stride);
    }
  }
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif

#endif  // FALCON_X86
