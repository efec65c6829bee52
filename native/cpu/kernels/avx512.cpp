// AVX-512 kernels (F, BW, VL, DQ; BF16 pair dot products and VNNI byte dot products where the CPU has
// them, else the AVX2 kernels for those dtypes). The matmul micro-kernel holds a tile of up to 8 input
// rows × 32 outputs (one weight panel) in 16 registers: per step along k it loads the panel's two
// vectors once and multiplies them by each row's broadcast input (16 multiply-adds per 2 loads plus
// 8 broadcasts), over the whole of k, so every weight byte is read once per 8 rows.
// This file is compiled for AVX-512 but only called after cpu_features() says the CPU runs it.
#include "../cpu_features.h"

#if FALCON_X86

#include <immintrin.h>

#include <algorithm>
#include <cmath>

// The target applies after the standard headers: an inline function of theirs compiled here for
// AVX-512 could be the copy the linker keeps for the whole addon, and fault on a CPU without it. The
// project headers follow it: their templates (with_count) call this file's lambdas, which inline
// only into functions of the same target.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's intrinsic headers trip these on _mm*_undefined_*; vector arguments never cross a non-AVX ABI here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,fma,f16c")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,fma,f16c"))), apply_to = function)
#endif

#include "kernels.h"
#include "avx512_common.h"
#include "fetch_ahead.h"

namespace falcon::cpu {
namespace {

inline __mmask16 lanes_below(int64_t count) {
  return count <= 0 ? __mmask16(0) : count >= 16 ? __mmask16(0xffff) : __mmask16((1u << count) - 1);
}

// exp(x) with relative error about 1e-7: x = n·ln2 + r, exp(r) by a degree-6 polynomial, 2^n by scalef.
inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-103.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// GELU with erf from Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
inline __m512 gelu512(__m512 v) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f));
  const __m512 a = _mm512_abs_ps(z);
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), one));
  __m512 poly = _mm512_set1_ps(1.061405429f);
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-1.453152027f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421413741f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284496736f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254829592f));
  poly = _mm512_mul_ps(poly, t);
  const __m512 erf_abs = _mm512_fnmadd_ps(poly, exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a)), one);
  // erf is odd: copy z's sign onto |erf|.
  const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs),
      _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(int(0x80000000u)))));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(one, erf));
}

// As dot_bytes (avx512_common.h): without the asm operand tied to the accumulator, GCC 12 copies or
// spills it every step of a vdpbf16ps chain. This one stays here: int4_avx512.cpp is not compiled for BF16.
inline void dot_bf16(__m512& accumulator, __m512bh a, __m512bh b) {
  asm("vdpbf16ps %2, %1, %0" : "+v"(accumulator) : "v"(a), "v"(b));
}

// Weight loaders: the 32 weights of one panel step as two float32 vectors.
struct F32Panel {
  using Element = float;
  static void load(const float* p, __m512& low, __m512& high) {
    low = _mm512_loadu_ps(p);
    high = _mm512_loadu_ps(p + 16);
  }
};
struct F16Panel {
  using Element = uint16_t;
  static void load(const uint16_t* p, __m512& low, __m512& high) {
    low = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    high = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
  }
};

// Writes one row of a tile through the epilogue (kernels.h), only the outputs that exist.
struct TileStore {
  float* y;
  int64_t y_stride;
  int64_t n0;
  int outputs;
  const Epilogue& epilogue;
  const float* scales;

  void operator()(__m512 low, __m512 high, int row) const {
    const __mmask16 mask_low = lanes_below(outputs), mask_high = lanes_below(outputs - 16);
    if (scales != nullptr) {
      low = _mm512_mul_ps(low, _mm512_maskz_loadu_ps(mask_low, scales + n0));
      high = _mm512_mul_ps(high, _mm512_maskz_loadu_ps(mask_high, scales + n0 + 16));
    }
    if (epilogue.bias != nullptr) {
      low = _mm512_add_ps(low, _mm512_maskz_loadu_ps(mask_low, epilogue.bias + n0));
      high = _mm512_add_ps(high, _mm512_maskz_loadu_ps(mask_high, epilogue.bias + n0 + 16));
    }
    if (epilogue.gelu) {
      low = gelu512(low);
      high = gelu512(high);
    }
    float* out = y + row * y_stride + n0;
    if (epilogue.accumulate) {
      low = _mm512_add_ps(low, _mm512_maskz_loadu_ps(mask_low, out));
      high = _mm512_add_ps(high, _mm512_maskz_loadu_ps(mask_high, out + 16));
    }
    _mm512_mask_storeu_ps(out, mask_low, low);
    if (outputs > 16) _mm512_mask_storeu_ps(out + 16, mask_high, high);
  }
};

// The store of panel p's outputs into rows of y from `y` on (int8 weights scale them per output).
inline TileStore panel_store(const WeightMatrix& w, int64_t p, const Epilogue& epilogue, float* y, int64_t y_stride) {
  const int64_t n0 = p * kPanelWidth;
  return TileStore{y, y_stride, n0, int(std::min<int64_t>(kPanelWidth, w.rows - n0)), epilogue,
                   w.dtype == DType::Int8 ? w.scales.data() : nullptr};
}

// Accumulators are named one by one: held in an array, GCC 12 keeps them in memory.
#define FALCON_ACCUMULATORS                                                                  \
  __m512 c0a = _mm512_setzero_ps(), c0b = c0a, c1a = c0a, c1b = c0a, c2a = c0a, c2b = c0a;   \
  __m512 c3a = c0a, c3b = c0a, c4a = c0a, c4b = c0a, c5a = c0a, c5b = c0a, c6a = c0a;        \
  __m512 c6b = c0a, c7a = c0a, c7b = c0a;
#define FALCON_EACH_ROW(op) op(0, c0a, c0b) op(1, c1a, c1b) op(2, c2a, c2b) op(3, c3a, c3b) \
                            op(4, c4a, c4b) op(5, c5a, c5b) op(6, c6a, c6b) op(7, c7a, c7b)
#define FALCON_STORE_ROW(r, a, b) \
  if (Rows > r) store_row(a, b, r);

// Micro-kernels are kept out of line: inlined into their caller, GCC 12 spills accumulators of the 8-row tile.
template <typename Panel, int Rows>
FALCON_NOINLINE void micro_float(const float* packed, const typename Panel::Element* panel, int64_t steps, const TileStore& store_row) {
  FALCON_ACCUMULATORS
#define FALCON_ROW(r, a, b)                                                    \
  if (Rows > r) {                                                              \
    const __m512 x = _mm512_set1_ps(packed[s * kPackedRows + r]);              \
    a = _mm512_fmadd_ps(x, low, a);                                            \
    b = _mm512_fmadd_ps(x, high, b);                                           \
  }
  for (int64_t s = 0; s < steps; ++s) {
    const auto* step = panel + s * kPanelWidth;
    __m512 low, high;
    Panel::load(step, low, high);
    FALCON_EACH_ROW(FALCON_ROW)
  }
#undef FALCON_ROW
  FALCON_EACH_ROW(FALCON_STORE_ROW)
}

// bf16: each step is a pair of k; vdpbf16ps multiplies the pairs and accumulates in float32.
template <int Rows>
FALCON_NOINLINE void micro_bf16(const uint32_t* packed, const uint16_t* panel, int64_t steps, const TileStore& store_row) {
  FALCON_ACCUMULATORS
#define FALCON_ROW(r, a, b)                                                              \
  if (Rows > r) {                                                                        \
    const __m512bh x = (__m512bh)_mm512_set1_epi32(int(packed[s * kPackedRows + r]));   \
    dot_bf16(a, x, low);                                                                 \
    dot_bf16(b, x, high);                                                                \
  }
  for (int64_t s = 0; s < steps; ++s) {
    const uint16_t* step = panel + s * 2 * kPanelWidth;
    const __m512bh low = (__m512bh)_mm512_loadu_si512(step);
    const __m512bh high = (__m512bh)_mm512_loadu_si512(step + kPanelWidth);
    FALCON_EACH_ROW(FALCON_ROW)
  }
#undef FALCON_ROW
  FALCON_EACH_ROW(FALCON_STORE_ROW)
}
#undef FALCON_ACCUMULATORS
#undef FALCON_STORE_ROW

// A lone row (decode) against two panels at once: two streams of weights instead of one keep more
// reads from memory in flight. 16-bit weights also ask for their lines ahead (fetch_ahead.h); float32's
// step, two lines a panel, ran 1–4 % slower with those requests than without. Decode of falcon-rw-1b's
// shape, 2 threads, against the single-panel kernel alternated: float16 13.9 → 17.4–18.6 tok/s (→ 13.9–14.8
// with two panels alone), bfloat16 16.3–19.0 → 17.9–20.5, float32 9.8 → 10.1–11.0.
template <typename Panel>
FALCON_NOINLINE void micro_float_two_panels(const float* packed, const typename Panel::Element* first,
                                            const typename Panel::Element* second, int64_t steps, const TileStore& store_first,
                                            const TileStore& store_second) {
  __m512 first_low = _mm512_setzero_ps(), first_high = first_low, second_low = first_low, second_high = first_low;
  for (int64_t s = 0; s < steps; ++s) {
    const __m512 x = _mm512_set1_ps(packed[s * kPackedRows]);
    __m512 low, high;
    if constexpr (sizeof(*first) == 2) {
      fetch_stream_ahead<1>(first + s * kPanelWidth);
      fetch_stream_ahead<1>(second + s * kPanelWidth);
    }
    Panel::load(first + s * kPanelWidth, low, high);
    first_low = _mm512_fmadd_ps(x, low, first_low);
    first_high = _mm512_fmadd_ps(x, high, first_high);
    Panel::load(second + s * kPanelWidth, low, high);
    second_low = _mm512_fmadd_ps(x, low, second_low);
    second_high = _mm512_fmadd_ps(x, high, second_high);
  }
  store_first(first_low, first_high, 0);
  store_second(second_low, second_high, 0);
}

FALCON_NOINLINE void micro_bf16_two_panels(const uint32_t* packed, const uint16_t* first, const uint16_t* second, int64_t steps,
                                           const TileStore& store_first, const TileStore& store_second) {
  __m512 first_low = _mm512_setzero_ps(), first_high = first_low, second_low = first_low, second_high = first_low;
  for (int64_t s = 0; s < steps; ++s) {
    const __m512bh x = (__m512bh)_mm512_set1_epi32(int(packed[s * kPackedRows]));
    const uint16_t* first_step = first + s * 2 * kPanelWidth;
    const uint16_t* second_step = second + s * 2 * kPanelWidth;
    fetch_stream_ahead<2>(first_step);
    fetch_stream_ahead<2>(second_step);
    dot_bf16(first_low, x, (__m512bh)_mm512_loadu_si512(first_step));
    dot_bf16(first_high, x, (__m512bh)_mm512_loadu_si512(first_step + kPanelWidth));
    dot_bf16(second_low, x, (__m512bh)_mm512_loadu_si512(second_step));
    dot_bf16(second_high, x, (__m512bh)_mm512_loadu_si512(second_step + kPanelWidth));
  }
  store_first(first_low, first_high, 0);
  store_second(second_low, second_high, 0);
}

// int8 (VNNI): each step is a quad of k. vpdpbusd multiplies unsigned by signed bytes: the weights are
// stored as w + 128 (dtype.h) and each block's accumulators start at −128 · Σ q, which leaves exactly
// Σ q · w. After each quantisation block the integer sums are scaled into `tile` in float32.
template <int Rows>
FALCON_NOINLINE void micro_i8(const uint32_t* packed, const uint8_t* panel, int64_t steps, const float* block_scales,
                                        const int32_t* block_sums, int64_t quant_blocks, const TileStore& store_row) {
  // Written by the first block, so never zeroed (zeroing it was 1.5 % of int8 prefill).
  alignas(64) float tile[Rows * kPanelWidth];
  for (int64_t block = 0; block < quant_blocks; ++block) {
#define FALCON_START(r) _mm512_set1_epi32(Rows > r ? -128 * block_sums[r * quant_blocks + block] : 0)
    __m512i c0a = FALCON_START(0), c0b = c0a, c1a = FALCON_START(1), c1b = c1a, c2a = FALCON_START(2), c2b = c2a;
    __m512i c3a = FALCON_START(3), c3b = c3a, c4a = FALCON_START(4), c4b = c4a, c5a = FALCON_START(5), c5b = c5a;
    __m512i c6a = FALCON_START(6), c6b = c6a, c7a = FALCON_START(7), c7b = c7a;
#undef FALCON_START
#define FALCON_ROW(r, a, b)                                                     \
  if (Rows > r) {                                                               \
    const __m512i quads = broadcast_quad(packed[s * kPackedRows + r]);          \
    dot_bytes(a, low, quads);                                                   \
    dot_bytes(b, high, quads);                                                  \
  }
    const int64_t block_end = std::min(steps, (block + 1) * kQuantSteps);
    for (int64_t s = block * kQuantSteps; s < block_end; ++s) {
      const uint8_t* step = panel + s * 4 * kPanelWidth;
      const __m512i low = _mm512_loadu_si512(step);
      const __m512i high = _mm512_loadu_si512(step + 2 * kPanelWidth);
      FALCON_EACH_ROW(FALCON_ROW)
    }
#undef FALCON_ROW
#define FALCON_SCALE(r, a, b)                                                                               \
  if (Rows > r) {                                                                                           \
    const __m512 scale = _mm512_set1_ps(block_scales[r * quant_blocks + block]);                            \
    float* row_tile = tile + r * kPanelWidth;                                                               \
    const __m512 low = _mm512_cvtepi32_ps(a), high = _mm512_cvtepi32_ps(b);                                 \
    if (block == 0) {                                                                                       \
      _mm512_store_ps(row_tile, _mm512_mul_ps(low, scale));                                                 \
      _mm512_store_ps(row_tile + 16, _mm512_mul_ps(high, scale));                                           \
    } else {                                                                                                \
      _mm512_store_ps(row_tile, _mm512_fmadd_ps(low, scale, _mm512_load_ps(row_tile)));                     \
      _mm512_store_ps(row_tile + 16, _mm512_fmadd_ps(high, scale, _mm512_load_ps(row_tile + 16)));          \
    }                                                                                                       \
  }
    FALCON_EACH_ROW(FALCON_SCALE)
#undef FALCON_SCALE
  }
  for (int r = 0; r < Rows; ++r) store_row(_mm512_load_ps(tile + r * kPanelWidth), _mm512_load_ps(tile + r * kPanelWidth + 16), r);
}
#undef FALCON_EACH_ROW

// A lone int8 row (decode) against two panels at once, as the float kernels: four accumulator chains
// instead of two, and both streams ask for their lines 4 KiB ahead. The block sums are scaled as in
// micro_i8, in the same order, so the results are the same. Against micro_i8<1> in alternating rounds
// of one process (24 matrices of 8192×2048 or 2048×8192, far more than the L3; 2 threads): 34–63 →
// 40–65 GB/s, faster in 5 rounds of 6.
FALCON_NOINLINE void micro_i8_two_panels(const uint32_t* packed, const uint8_t* first, const uint8_t* second, int64_t steps,
                                         const float* block_scales, const int32_t* block_sums, int64_t quant_blocks,
                                         const TileStore& store_first, const TileStore& store_second) {
  __m512 first_low = _mm512_setzero_ps(), first_high = first_low, second_low = first_low, second_high = first_low;
  for (int64_t block = 0; block < quant_blocks; ++block) {
    __m512i a = _mm512_set1_epi32(-128 * block_sums[block]), b = a, c = a, d = a;
    const int64_t block_end = std::min(steps, (block + 1) * kQuantSteps);
    for (int64_t s = block * kQuantSteps; s < block_end; ++s) {
      const uint8_t* first_step = first + s * 4 * kPanelWidth;
      const uint8_t* second_step = second + s * 4 * kPanelWidth;
      fetch_stream_ahead<2>(first_step);
      fetch_stream_ahead<2>(second_step);
      const __m512i quads = broadcast_quad(packed[s * kPackedRows]);
      dot_bytes(a, _mm512_loadu_si512(first_step), quads);
      dot_bytes(b, _mm512_loadu_si512(first_step + 2 * kPanelWidth), quads);
      dot_bytes(c, _mm512_loadu_si512(second_step), quads);
      dot_bytes(d, _mm512_loadu_si512(second_step + 2 * kPanelWidth), quads);
    }
    const __m512 scale = _mm512_set1_ps(block_scales[block]);
    const auto scaled = [&](__m512 sum, __m512i block_sum) {
      return block == 0 ? _mm512_mul_ps(_mm512_cvtepi32_ps(block_sum), scale) : _mm512_fmadd_ps(_mm512_cvtepi32_ps(block_sum), scale, sum);
    };
    first_low = scaled(first_low, a);
    first_high = scaled(first_high, b);
    second_low = scaled(second_low, c);
    second_high = scaled(second_high, d);
  }
  store_first(first_low, first_high, 0);
  store_second(second_low, second_high, 0);
}

// Row groups outer, then panels, then the group's row blocks: a panel (at most a few hundred KB) stays
// in cache while every row block of the group passes over it; for a single row it is streamed from
// memory exactly once. A group's packed activations (one 32-bit unit a row per step) are at most
// kRowGroupBytes, so they stay in the L3 from one panel to the next: with all 512 rows of a prompt in
// one group, float32 ran the FFN's down projection (k = 8192, 16 MiB of activations) at 286–301 GOP/s
// where it reached 347–352 in groups of 4 MiB (Zen 5, 2 threads; 8 MiB: 331–337), and 2048 rows of
// k = 2048 at 260 against 373; activations under 4 MiB (int8's, most bfloat16 ones) keep one group.
// (Requesting the next panel in software as well slowed single-row decode by 8–15 % here; the lone
// row's kernels instead read two panels at once, each line asked for 4 KiB ahead.)
constexpr int64_t kRowGroupBytes = int64_t(4) << 20;
template <typename Micro>
void for_each_tile(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                   const Epilogue& epilogue, float* y, int64_t y_stride, Micro micro) {
  const int64_t block_bytes = x.steps * kPackedRows * int64_t(sizeof(*x.units));
  const int64_t group_blocks = std::max<int64_t>(1, kRowGroupBytes / block_bytes);
  const int64_t blocks = (x.rows + kPackedRows - 1) / kPackedRows;
  for (int64_t first_block = 0; first_block < blocks; first_block += group_blocks) {
    const int64_t end_block = std::min(blocks, first_block + group_blocks);
    for (int64_t p = first_panel; p < end_panel; ++p) {
      for (int64_t block = first_block; block < end_block; ++block) {
        const int block_rows = int(std::min<int64_t>(kPackedRows, x.rows - block * kPackedRows));
        micro(block, block_rows, w.panel(p), panel_store(w, p, epilogue, y + block * kPackedRows * y_stride, y_stride));
      }
    }
  }
}

// One tile of each weight dtype: run<Rows>(x, block, panel, store) multiplies row block
// `block` of x by one panel; where kTwoPanels, run_two_panels(x, first, second, stores) multiplies a
// lone row by two.
template <typename Panel>
struct FloatTile {
  static constexpr bool kTwoPanels = true;
  template <int Rows>
  static void run(const PackedRows& x, int64_t block, const void* panel, const TileStore& store) {
    micro_float<Panel, Rows>(reinterpret_cast<const float*>(x.units) + block * x.steps * kPackedRows,
                             static_cast<const typename Panel::Element*>(panel), x.steps, store);
  }
  static void run_two_panels(const PackedRows& x, const void* first, const void* second, const TileStore& store_first,
                             const TileStore& store_second) {
    using Element = typename Panel::Element;
    micro_float_two_panels<Panel>(reinterpret_cast<const float*>(x.units), static_cast<const Element*>(first),
                                  static_cast<const Element*>(second), x.steps, store_first, store_second);
  }
};
struct Bf16Tile {
  static constexpr bool kTwoPanels = true;
  template <int Rows>
  static void run(const PackedRows& x, int64_t block, const void* panel, const TileStore& store) {
    micro_bf16<Rows>(x.units + block * x.steps * kPackedRows, static_cast<const uint16_t*>(panel), x.steps, store);
  }
  static void run_two_panels(const PackedRows& x, const void* first, const void* second, const TileStore& store_first,
                             const TileStore& store_second) {
    micro_bf16_two_panels(x.units, static_cast<const uint16_t*>(first), static_cast<const uint16_t*>(second), x.steps,
                          store_first, store_second);
  }
};
struct Int8Tile {
  static constexpr bool kTwoPanels = true;
  template <int Rows>
  static void run(const PackedRows& x, int64_t block, const void* panel, const TileStore& store) {
    const int64_t first_row = block * kPackedRows * x.quant_blocks;
    micro_i8<Rows>(x.units + block * x.steps * kPackedRows, static_cast<const uint8_t*>(panel), x.steps,
                   x.block_scales + first_row, x.block_sums + first_row, x.quant_blocks, store);
  }
  static void run_two_panels(const PackedRows& x, const void* first, const void* second, const TileStore& store_first,
                             const TileStore& store_second) {
    micro_i8_two_panels(x.units, static_cast<const uint8_t*>(first), static_cast<const uint8_t*>(second), x.steps,
                        x.block_scales, x.block_sums, x.quant_blocks, store_first, store_second);
  }
};

template <typename Tile>
void matmul(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel, const Epilogue& epilogue,
            float* y, int64_t y_stride) {
  if constexpr (Tile::kTwoPanels) {
    if (x.rows == 1) {
      for_panel_pairs(first_panel, end_panel, [&](int64_t p) {
        Tile::run_two_panels(x, w.panel(p), w.panel(p + 1), panel_store(w, p, epilogue, y, y_stride),
                             panel_store(w, p + 1, epilogue, y, y_stride));
      }, [&](int64_t p) { Tile::template run<1>(x, 0, w.panel(p), panel_store(w, p, epilogue, y, y_stride)); });
      return;
    }
  }
  for_each_tile(x, w, first_panel, end_panel, epilogue, y, y_stride,
                [&](int64_t block, int block_rows, const void* panel, const TileStore& store) {
                  with_count<kPackedRows>(block_rows, [&](auto rows) {
                    Tile::template run<decltype(rows)::value>(x, block, panel, store);
                  });
                });
}

// The low and high 8 lanes of v, widened to double.
inline __m512d low_as_double(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d high_as_double(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }

// The scalar reference's arithmetic, 16 values at a time (each half widened to 8 doubles).
void layer_norm_row(const float* in, int64_t dim, const float* gamma, const float* beta, float epsilon, float* out) {
  __m512d sum_low = _mm512_setzero_pd(), sum_high = _mm512_setzero_pd();
  for (int64_t i = 0; i < dim; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(lanes_below(dim - i), in + i);
    sum_low = _mm512_add_pd(sum_low, low_as_double(v));
    sum_high = _mm512_add_pd(sum_high, high_as_double(v));
  }
  const double mean_d = _mm512_reduce_add_pd(_mm512_add_pd(sum_low, sum_high)) / double(dim);
  const __m512d mean_wide = _mm512_set1_pd(mean_d);
  __m512d squares_low = _mm512_setzero_pd(), squares_high = _mm512_setzero_pd();
  for (int64_t i = 0; i < dim; i += 16) {
    const __mmask16 mask = lanes_below(dim - i);
    const __m512 v = _mm512_maskz_loadu_ps(mask, in + i);
    // Masked-off lanes would add mean²: keep them at zero.
    const __m512d centred_low = _mm512_maskz_sub_pd(__mmask8(mask), low_as_double(v), mean_wide);
    const __m512d centred_high = _mm512_maskz_sub_pd(__mmask8(mask >> 8), high_as_double(v), mean_wide);
    squares_low = _mm512_fmadd_pd(centred_low, centred_low, squares_low);
    squares_high = _mm512_fmadd_pd(centred_high, centred_high, squares_high);
  }
  const double squares = _mm512_reduce_add_pd(_mm512_add_pd(squares_low, squares_high));
  const __m512 mean = _mm512_set1_ps(float(mean_d));
  const __m512 inverse_std = _mm512_set1_ps(float(1.0 / std::sqrt(squares / double(dim) + double(epsilon))));
  for (int64_t i = 0; i < dim; i += 16) {
    const __mmask16 mask = lanes_below(dim - i);
    const __m512 normalised = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, in + i), mean), inverse_std);
    _mm512_mask_storeu_ps(out + i, mask, _mm512_fmadd_ps(normalised, _mm512_maskz_loadu_ps(mask, gamma + i),
                                                         _mm512_maskz_loadu_ps(mask, beta + i)));
  }
}

void quantise_row(const float* x, int64_t cols, int64_t quant_blocks, uint32_t* units, float* scales, int32_t* sums) {
  const __m512 lowest = _mm512_set1_ps(-127.0f), highest = _mm512_set1_ps(127.0f);
  for (int64_t block = 0; block < quant_blocks; ++block) {
    const int64_t k_begin = block * kQuantSteps * 4;
    const int64_t k_end = std::min(cols, k_begin + kQuantSteps * 4);
    __m512 largest_lanes = _mm512_setzero_ps();
    for (int64_t k = k_begin; k < k_end; k += 16) {
      largest_lanes = _mm512_max_ps(largest_lanes, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes_below(k_end - k), x + k)));
    }
    const float largest = _mm512_reduce_max_ps(largest_lanes);
    const __m512 inverse = _mm512_set1_ps(largest > 0.0f ? 127.0f / largest : 0.0f);
    scales[block] = largest / 127.0f;
    __m512i total = _mm512_setzero_si512();
    for (int64_t k = k_begin; k < k_end; k += 16) {
      const __m512 v = _mm512_maskz_loadu_ps(lanes_below(k_end - k), x + k);
      // Rounds to nearest even, as lrintf does in the default rounding mode.
      const __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inverse), lowest), highest));
      total = _mm512_add_epi32(total, q);
      alignas(16) uint32_t quads[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(quads), _mm512_cvtepi32_epi8(q));
      const int64_t first_step = k / 4;
      const int64_t step_count = std::min<int64_t>(4, (k_end - k + 3) / 4);
      for (int64_t i = 0; i < step_count; ++i) units[(first_step + i) * kPackedRows] = quads[i];
    }
    sums[block] = _mm512_reduce_add_epi32(total);
  }
}

// 16 stored KV elements as float32, exactly: bfloat16 is the top half of a float32, float16 widens by F16C.
// The masked forms load only the lanes of `mask` (zeros elsewhere) and read nothing past them.
inline __m512 widen16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 widen16(const Bf16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline __m512 widen16(const F16* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 widen16(__mmask16 mask, const float* p) { return _mm512_maskz_loadu_ps(mask, p); }
inline __m512 widen16(__mmask16 mask, const Bf16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}
inline __m512 widen16(__mmask16 mask, const F16* p) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p)); }

#define FALCON_EACH_QUERY(op) op(0) op(1) op(2) op(3)
#define FALCON_ZERO(g) __m512 a##g##0 = _mm512_setzero_ps(), a##g##1 = a##g##0, a##g##2 = a##g##0, a##g##3 = a##g##0;
// Query g's four accumulators += factor · (x0, x1, x2, x3).
#define FALCON_FMA4(g, factor, x0, x1, x2, x3)  \
  a##g##0 = _mm512_fmadd_ps(factor, x0, a##g##0); \
  a##g##1 = _mm512_fmadd_ps(factor, x1, a##g##1); \
  a##g##2 = _mm512_fmadd_ps(factor, x2, a##g##2); \
  a##g##3 = _mm512_fmadd_ps(factor, x3, a##g##3);

// Each value row is loaded once (64 columns at a time) and multiplied by every query's probability.
// Value j is row j % kKeyBlock of block j / kKeyBlock; each column's sum runs over j in order.
template <typename Element, int Queries>
void weighted_sum_group(const float* p, int64_t p_stride, const void* const* value_blocks, int64_t count, int64_t d,
                        float* out, int64_t out_stride) {
  int64_t c = 0;
  for (; c + 64 <= d; c += 64) {
    FALCON_EACH_QUERY(FALCON_ZERO)
    for (int64_t first = 0; first < count; first += kKeyBlock) {
      const Element* block = static_cast<const Element*>(value_blocks[first / kKeyBlock]) + c;
      const int64_t rows = std::min(kKeyBlock, count - first);
      for (int64_t r = 0; r < rows; ++r) {
        const Element* row = block + r * d;
        const int64_t j = first + r;
        const __m512 v0 = widen16(row), v1 = widen16(row + 16), v2 = widen16(row + 32), v3 = widen16(row + 48);
#define FALCON_ACCUMULATE(g)                               \
  if (Queries > g) {                                       \
    const __m512 pj = _mm512_set1_ps(p[g * p_stride + j]); \
    FALCON_FMA4(g, pj, v0, v1, v2, v3)                     \
  }
        FALCON_EACH_QUERY(FALCON_ACCUMULATE)
#undef FALCON_ACCUMULATE
      }
    }
#define FALCON_STORE(g)                                  \
  if (Queries > g) {                                     \
    float* o = out + g * out_stride + c;                 \
    _mm512_storeu_ps(o, a##g##0);                        \
    _mm512_storeu_ps(o + 16, a##g##1);                   \
    _mm512_storeu_ps(o + 32, a##g##2);                   \
    _mm512_storeu_ps(o + 48, a##g##3);                   \
  }
    FALCON_EACH_QUERY(FALCON_STORE)
#undef FALCON_STORE
  }
  for (; c < d; c += 16) {
    const __mmask16 mask = lanes_below(d - c);
    for (int g = 0; g < Queries; ++g) {
      __m512 a = _mm512_setzero_ps();
      for (int64_t first = 0; first < count; first += kKeyBlock) {
        const Element* block = static_cast<const Element*>(value_blocks[first / kKeyBlock]) + c;
        const int64_t rows = std::min(kKeyBlock, count - first);
        for (int64_t r = 0; r < rows; ++r) {
          a = _mm512_fmadd_ps(_mm512_set1_ps(p[g * p_stride + first + r]), widen16(mask, block + r * d), a);
        }
      }
      _mm512_mask_storeu_ps(out + g * out_stride + c, mask, a);
    }
  }
}
#undef FALCON_EACH_QUERY
#undef FALCON_ZERO
#undef FALCON_FMA4

// One vector per query for each block of 16 keys, one multiply-add per query and head dimension.
// One or two queries score four or two blocks side by side: a lone decode query would otherwise wait
// on a single chain of d dependent multiply-adds. A lane's sum is the same chain either way.
template <typename Element, int Queries>
void key_scores_blocked_group(const float* q, int64_t q_stride, const void* const* key_blocks, int64_t count, int64_t d,
                              float* scores, int64_t score_stride) {
  const auto key_block = [key_blocks](int64_t index) { return static_cast<const Element*>(key_blocks[index]); };
  int64_t j = 0;
  if constexpr (Queries == 1) {
    for (; j + 3 * kKeyBlock < count; j += 4 * kKeyBlock) {
      const Element* block0 = key_block(j / kKeyBlock);
      const Element *block1 = key_block(j / kKeyBlock + 1), *block2 = key_block(j / kKeyBlock + 2), *block3 = key_block(j / kKeyBlock + 3);
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t c = 0; c < d; ++c) {
        const __m512 x = _mm512_set1_ps(q[c]);
        a0 = _mm512_fmadd_ps(x, widen16(block0 + c * kKeyBlock), a0);
        a1 = _mm512_fmadd_ps(x, widen16(block1 + c * kKeyBlock), a1);
        a2 = _mm512_fmadd_ps(x, widen16(block2 + c * kKeyBlock), a2);
        a3 = _mm512_fmadd_ps(x, widen16(block3 + c * kKeyBlock), a3);
      }
      _mm512_storeu_ps(scores + j, a0);
      _mm512_storeu_ps(scores + j + kKeyBlock, a1);
      _mm512_storeu_ps(scores + j + 2 * kKeyBlock, a2);
      _mm512_mask_storeu_ps(scores + j + 3 * kKeyBlock, lanes_below(count - j - 3 * kKeyBlock), a3);
    }
  } else if constexpr (Queries == 2) {
    for (; j + kKeyBlock < count; j += 2 * kKeyBlock) {
      const Element *block0 = key_block(j / kKeyBlock), *block1 = key_block(j / kKeyBlock + 1);
      __m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;  // a<query><block>
      for (int64_t c = 0; c < d; ++c) {
        const __m512 key0 = widen16(block0 + c * kKeyBlock), key1 = widen16(block1 + c * kKeyBlock);
        const __m512 x0 = _mm512_set1_ps(q[c]), x1 = _mm512_set1_ps(q[q_stride + c]);
        a00 = _mm512_fmadd_ps(x0, key0, a00);
        a01 = _mm512_fmadd_ps(x0, key1, a01);
        a10 = _mm512_fmadd_ps(x1, key0, a10);
        a11 = _mm512_fmadd_ps(x1, key1, a11);
      }
      const __mmask16 mask = lanes_below(count - j - kKeyBlock);
      _mm512_storeu_ps(scores + j, a00);
      _mm512_mask_storeu_ps(scores + j + kKeyBlock, mask, a01);
      _mm512_storeu_ps(scores + score_stride + j, a10);
      _mm512_mask_storeu_ps(scores + score_stride + j + kKeyBlock, mask, a11);
    }
  }
  for (; j < count; j += kKeyBlock) {
    const Element* block = key_block(j / kKeyBlock);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t c = 0; c < d; ++c) {
      const __m512 key = widen16(block + c * kKeyBlock);
      a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[c]), key, a0);
      if (Queries > 1) a1 = _mm512_fmadd_ps(_mm512_set1_ps(q[q_stride + c]), key, a1);
      if (Queries > 2) a2 = _mm512_fmadd_ps(_mm512_set1_ps(q[2 * q_stride + c]), key, a2);
      if (Queries > 3) a3 = _mm512_fmadd_ps(_mm512_set1_ps(q[3 * q_stride + c]), key, a3);
    }
    const __mmask16 mask = lanes_below(count - j);
    _mm512_mask_storeu_ps(scores + j, mask, a0);
    if (Queries > 1) _mm512_mask_storeu_ps(scores + score_stride + j, mask, a1);
    if (Queries > 2) _mm512_mask_storeu_ps(scores + 2 * score_stride + j, mask, a2);
    if (Queries > 3) _mm512_mask_storeu_ps(scores + 3 * score_stride + j, mask, a3);
  }
}

template <typename Element>
void key_scores_blocked(const float* q, int64_t q_stride, int64_t queries, const void* const* key_blocks, int64_t count,
                        int64_t d, float* scores, int64_t score_stride) {
  static_assert(kKeyBlock == 16, "one AVX-512 vector per key block");
  with_count<kAttentionQueries>(queries, [&](auto group) {
    key_scores_blocked_group<Element, decltype(group)::value>(q, q_stride, key_blocks, count, d, scores, score_stride);
  });
}

template <typename Element>
void weighted_sum(const float* p, int64_t p_stride, int64_t queries, const void* const* value_blocks, int64_t count,
                  int64_t d, float* out, int64_t out_stride) {
  with_count<kAttentionQueries>(queries, [&](auto group) {
    weighted_sum_group<Element, decltype(group)::value>(p, p_stride, value_blocks, count, d, out, out_stride);
  });
}

double peak_ops(int64_t iterations, PeakOp op) {
  const CpuFeatures& features = cpu_features();
  if ((op == PeakOp::Bf16Dot && !features.avx512_bf16) || (op == PeakOp::Int8Dot && !features.avx512_vnni)) {
    return avx2_kernels().peak_ops(iterations, op);  // the kernels those dtypes use on this CPU
  }
  // Distinct starting values: identical chains would be merged into one by the compiler.
#define FALCON_START(i) _mm512_set1_ps(1.0f + 0.001f * i)
  __m512 a0 = FALCON_START(0), a1 = FALCON_START(1), a2 = FALCON_START(2), a3 = FALCON_START(3);
  __m512 a4 = FALCON_START(4), a5 = FALCON_START(5), a6 = FALCON_START(6), a7 = FALCON_START(7);
  __m512 a8 = FALCON_START(8), a9 = FALCON_START(9), a10 = FALCON_START(10), a11 = FALCON_START(11);
#undef FALCON_START
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  const __m512bh pair = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // (1.0, 1.0) in bf16
  const __m512i bytes = _mm512_set1_epi8(1);
  for (int64_t i = 0; i < iterations; ++i) {
    if (op == PeakOp::Bf16Dot) {
#define FALCON_DP(a) a = _mm512_dpbf16_ps(a, pair, pair)
      FALCON_DP(a0); FALCON_DP(a1); FALCON_DP(a2); FALCON_DP(a3); FALCON_DP(a4); FALCON_DP(a5);
      FALCON_DP(a6); FALCON_DP(a7); FALCON_DP(a8); FALCON_DP(a9); FALCON_DP(a10); FALCON_DP(a11);
#undef FALCON_DP
    } else if (op == PeakOp::Int8Dot) {
#define FALCON_DP(a) a = _mm512_castsi512_ps(_mm512_dpbusd_epi32(_mm512_castps_si512(a), bytes, bytes))
      FALCON_DP(a0); FALCON_DP(a1); FALCON_DP(a2); FALCON_DP(a3); FALCON_DP(a4); FALCON_DP(a5);
      FALCON_DP(a6); FALCON_DP(a7); FALCON_DP(a8); FALCON_DP(a9); FALCON_DP(a10); FALCON_DP(a11);
#undef FALCON_DP
    } else {
#define FALCON_FMA(a) a = _mm512_fmadd_ps(a, m, b)
      FALCON_FMA(a0); FALCON_FMA(a1); FALCON_FMA(a2); FALCON_FMA(a3); FALCON_FMA(a4); FALCON_FMA(a5);
      FALCON_FMA(a6); FALCON_FMA(a7); FALCON_FMA(a8); FALCON_FMA(a9); FALCON_FMA(a10); FALCON_FMA(a11);
#undef FALCON_FMA
    }
  }
  const __m512 total = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                     _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)),
                                                   _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11))));
  volatile float sink = _mm512_reduce_add_ps(total);
  (void)sink;
  // 12 registers × 16 lanes × (2 operations per FMA, 4 per bf16 pair dot product, 8 per byte quad).
  return double(iterations) * 12 * 16 * (op == PeakOp::Bf16Dot ? 4 : op == PeakOp::Int8Dot ? 8 : 2);
}

float mask_scores(float* scores, const uint8_t* valid, const int32_t* position, int64_t count, float slope, float scale) {
  const __m512 slope_v = _mm512_set1_ps(slope), scale_v = _mm512_set1_ps(scale), masked = _mm512_set1_ps(-INFINITY);
  __m512 largest = masked;
  for (int64_t j = 0; j < count; j += 16) {
    const __mmask16 lanes = lanes_below(count - j);
    const __mmask16 real = _mm512_mask_test_epi32_mask(lanes, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(lanes, valid + j)),
                                                       _mm512_set1_epi32(1));
    const __m512 positions = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(lanes, position + j));
    const __m512 biased = _mm512_mul_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(lanes, scores + j), _mm512_mul_ps(slope_v, positions)), scale_v);
    const __m512 score = _mm512_mask_blend_ps(real, masked, biased);
    _mm512_mask_storeu_ps(scores + j, lanes, score);
    largest = _mm512_mask_max_ps(largest, lanes, largest, score);
  }
  return _mm512_reduce_max_ps(largest);
}

float exp_sum(float* x, int64_t n, float shift) {
  const __m512 shift_v = _mm512_set1_ps(shift);
  __m512 total = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = lanes_below(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    // Masked scores are -inf: their probability must be exactly zero, not exp's clamped minimum.
    const __mmask16 finite = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ) & mask;
    const __m512 e = _mm512_maskz_mov_ps(finite, exp512(_mm512_sub_ps(v, shift_v)));
    _mm512_mask_storeu_ps(x + i, mask, e);
    total = _mm512_mask_add_ps(total, mask, total, e);
  }
  return _mm512_reduce_add_ps(total);
}

float stream_sum(const float* data, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(data + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(data + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(data + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(data + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

}  // namespace

const KernelTable& avx512_kernels() {
  static const KernelTable table = [] {
    // CPUs with AVX-512 but without its BF16 or VNNI extensions run those dtypes on the AVX2 kernels,
    // and then pack bf16 inputs for them.
    const CpuFeatures& features = cpu_features();
    const KernelTable& avx2 = avx2_kernels();
    return KernelTable{Isa::Avx512, matmul<FloatTile<F32Panel>>, features.avx512_bf16 ? matmul<Bf16Tile> : avx2.matmul_bf16,
                       matmul<FloatTile<F16Panel>>, features.avx512_vnni ? matmul<Int8Tile> : avx2.matmul_i8,
                       features.avx512_bf16 ? INT64_MAX : avx2.bf16_pairs_max_rows, quantise_row, layer_norm_row,
                       {key_scores_blocked<float>, weighted_sum<float>}, {key_scores_blocked<Bf16>, weighted_sum<Bf16>},
                       {key_scores_blocked<F16>, weighted_sum<F16>}, mask_scores, exp_sum, peak_ops, stream_sum};
  }();
  return table;
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif

#endif  // FALCON_X86
