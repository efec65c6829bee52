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

// Rows (≤ kPackedRows) of one packed row block times one panel, into tile[Rows][32]. `packed` is the
// block's units, block_scales and group_sums its first row's (rows quant_blocks and groups apart).
// Up to 4 rows (decode), the high nibbles are only masked, not shifted (16 q each), into accumulators
// of their own, shifted back once per group (exact: every product is a multiple of 16): one operation
// less per vector, and two dependency chains per accumulator pair where one row has few to overlap.
// 8 rows need the registers for one pair of accumulators a row. A lone row streams its panel from
// memory and asks for each group's lines 4 KiB ahead, as the AVX2 kernel does: in alternating rounds of
// one process (24 matrices of 8192×2048 or 2048×8192, far more than the L3; 2 threads), 0–5 % more
// bandwidth, in every round.
template <int Rows>
FALCON_NOINLINE void micro_i4(const uint32_t* packed, const uint8_t* panel, int64_t steps, int64_t groups,
                              const float* block_scales, int64_t quant_blocks, const int32_t* group_sums, float* tile) {
  constexpr bool kSplit = Rows <= 4;
  constexpr int kHigh = kSplit ? 2 * Rows : 0;  // where the high-nibble accumulators start
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
  const __m512i high_nibbles = _mm512_set1_epi8(int8_t(0xf0));
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* group = panel + size_t(g) * kInt4GroupBytes;
    const int64_t count = std::min(kGroupSteps, steps - g * kGroupSteps);  // 8 but in a short last group
    const uint32_t* units = packed + g * kGroupSteps * kPackedRows;
    if (Rows == 1) fetch_stream_ahead<int((kInt4GroupBytes + 63) / 64)>(group);
    __m512i sums[(kSplit ? 4 : 2) * Rows];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      sums[2 * r] = sums[2 * r + 1] = _mm512_set1_epi32(-8 * group_sums[r * groups + g]);
      if (kSplit) sums[kHigh + 2 * r] = sums[kHigh + 2 * r + 1] = _mm512_setzero_si512();
    }
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      const __m512i v0 = _mm512_loadu_si512(group + 2 * t * 64), v1 = _mm512_loadu_si512(group + (2 * t + 1) * 64);
      const __m512i low0 = _mm512_and_si512(v0, low_nibbles), low1 = _mm512_and_si512(v1, low_nibbles);
      const __m512i high0 = kSplit ? _mm512_and_si512(v0, high_nibbles) : _mm512_and_si512(_mm512_srli_epi16(v0, 4), low_nibbles);
      const __m512i high1 = kSplit ? _mm512_and_si512(v1, high_nibbles) : _mm512_and_si512(_mm512_srli_epi16(v1, 4), low_nibbles);
      if (t < count) {
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          const __m512i quads = broadcast_quad(units[t * kPackedRows + r]);
          dot_bytes(sums[2 * r], low0, quads);
          dot_bytes(sums[2 * r + 1], low1, quads);
        }
      }
      if (t + 4 < count) {
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          const __m512i quads = broadcast_quad(units[(t + 4) * kPackedRows + r]);
          dot_bytes(sums[kHigh + 2 * r], high0, quads);
          dot_bytes(sums[kHigh + 2 * r + 1], high1, quads);
        }
      }
    }
    if (kSplit) {
#pragma GCC unroll 8
      for (int i = 0; i < 2 * Rows; ++i) sums[i] = _mm512_add_epi32(sums[i], _mm512_srai_epi32(sums[kHigh + i], 4));
    }
    const __m512 scales0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + kInt4NibbleBytes)));
    const __m512 scales1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + kInt4NibbleBytes) + 1));
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const __m512 activation_scale = _mm512_set1_ps(block_scales[r * quant_blocks + g * kGroupSteps / kQuantSteps]);
      const __m512 scale0 = _mm512_mul_ps(scales0, activation_scale), scale1 = _mm512_mul_ps(scales1, activation_scale);
      const __m512 value0 = _mm512_cvtepi32_ps(sums[2 * r]), value1 = _mm512_cvtepi32_ps(sums[2 * r + 1]);
      float* out = tile + r * kPanelWidth;
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
// every row block passes over it; for a single row it is streamed from memory once.
void matmul_i4_avx512(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                      const Epilogue& epilogue, float* y, int64_t y_stride) {
  alignas(64) float tile[kPackedRows * kPanelWidth];
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
