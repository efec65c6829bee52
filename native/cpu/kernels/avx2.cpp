// AVX2 + FMA + F16C kernels. The matmul micro-kernel holds 2 input rows × 32 outputs (one panel)
// in 8 registers (16 ymm registers in all); bfloat16 pairs are widened to float32 by shifting,
// since AVX2 has no bf16 dot product.
#include "../cpu_features.h"

#if FALCON_X86

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

// The target applies after the standard headers: an inline function of theirs compiled here for
// AVX2 could be the copy the linker keeps for the whole addon, and fault on a CPU without it. The
// project headers follow it: their templates (with_count) call this file's lambdas, which inline
// only into functions of the same target.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's intrinsic headers trip these on _mm*_undefined_*; vector arguments never cross a non-AVX ABI here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC target("avx2,fma,f16c")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

#include "../../core/dtype.h"
#include "kernels.h"

namespace falcon::cpu {
namespace {

constexpr int kRowsPerTile = 2;

// Lane i is valid when i < remaining.
inline __m256i lanes_below(int64_t remaining) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::max<int64_t>(0, std::min<int64_t>(remaining, 8)))), lanes);
}

inline __m256 load_f32(const float* p, int64_t remaining) {
  return remaining >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes_below(remaining));
}


// Weight loaders: the 32 weights of one panel step as four float32 vectors.
struct F32Panel {
  using Element = float;
  static void load(const float* p, __m256* w) {
    for (int i = 0; i < 4; ++i) w[i] = _mm256_loadu_ps(p + 8 * i);
  }
};
struct F16Panel {
  using Element = uint16_t;
  static void load(const uint16_t* p, __m256* w) {
    for (int i = 0; i < 4; ++i) w[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8 * i)));
  }
};

// exp(x) with relative error about 1e-7; 2^n is built in the exponent bits.
inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-87.3365447504f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
}

// GELU with erf from Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
inline __m256 gelu256(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 z = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f));
  const __m256 a = _mm256_andnot_ps(sign_bit, z);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), one));
  __m256 poly = _mm256_set1_ps(1.061405429f);
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
  poly = _mm256_mul_ps(poly, t);
  const __m256 erf_abs = _mm256_fnmadd_ps(poly, exp256(_mm256_mul_ps(_mm256_xor_ps(a, sign_bit), a)), one);
  const __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, sign_bit));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(one, erf));
}

// Writes one row of a tile through the epilogue (kernels.h), only the outputs that exist.
struct TileStore {
  float* y;
  int64_t y_stride;
  int64_t n0;
  int outputs;
  const Epilogue& epilogue;
  const float* scales;

  void operator()(const __m256* c, int row) const {
    alignas(32) float values[32];
    for (int i = 0; i < 4; ++i) {
      __m256 v = c[i];
      if (scales != nullptr) v = _mm256_mul_ps(v, load_f32(scales + n0 + 8 * i, outputs - 8 * i));
      if (epilogue.bias != nullptr) v = _mm256_add_ps(v, load_f32(epilogue.bias + n0 + 8 * i, outputs - 8 * i));
      if (epilogue.gelu) v = gelu256(v);
      _mm256_store_ps(values + 8 * i, v);
    }
    float* out = y + row * y_stride + n0;
    for (int j = 0; j < outputs; ++j) out[j] = epilogue.accumulate ? out[j] + values[j] : values[j];
  }
};

// Writes the first Rows rows of a tile (row 0 in c00..c03, row 1 in c10..c13).
template <int Rows>
void store_rows(const TileStore& store, __m256 c00, __m256 c01, __m256 c02, __m256 c03, __m256 c10, __m256 c11,
                __m256 c12, __m256 c13) {
  const __m256 row0[4] = {c00, c01, c02, c03};
  store(row0, 0);
  if (Rows > 1) {
    const __m256 row1[4] = {c10, c11, c12, c13};
    store(row1, 1);
  }
}

// Accumulators are named one by one: held in an array, GCC 12 keeps them in memory.
template <typename Panel, int Rows>
void micro_float(const float* packed, const typename Panel::Element* panel, int64_t steps, const TileStore& store) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  for (int64_t s = 0; s < steps; ++s) {
    __m256 w[4];
    Panel::load(panel + s * kPanelWidth, w);
    const __m256 x0 = _mm256_broadcast_ss(packed + s * kPackedRows);
    c00 = _mm256_fmadd_ps(x0, w[0], c00);
    c01 = _mm256_fmadd_ps(x0, w[1], c01);
    c02 = _mm256_fmadd_ps(x0, w[2], c02);
    c03 = _mm256_fmadd_ps(x0, w[3], c03);
    if (Rows > 1) {
      const __m256 x1 = _mm256_broadcast_ss(packed + s * kPackedRows + 1);
      c10 = _mm256_fmadd_ps(x1, w[0], c10);
      c11 = _mm256_fmadd_ps(x1, w[1], c11);
      c12 = _mm256_fmadd_ps(x1, w[2], c12);
      c13 = _mm256_fmadd_ps(x1, w[3], c13);
    }
  }
  store_rows<Rows>(store, c00, c01, c02, c03, c10, c11, c12, c13);
}

// bf16 pairs: the even and odd k of each output are split into two float32 vectors.
template <int Rows>
void micro_bf16(const uint32_t* packed, const uint16_t* panel, int64_t steps, const TileStore& store) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  const __m256i high_half = _mm256_set1_epi32(int(0xffff0000u));
  for (int64_t s = 0; s < steps; ++s) {
    const uint16_t* step = panel + s * 2 * kPanelWidth;
    const uint32_t unit0 = packed[s * kPackedRows];
    const __m256 x0_even = _mm256_set1_ps(bf16_to_f32(uint16_t(unit0))), x0_odd = _mm256_set1_ps(bf16_to_f32(uint16_t(unit0 >> 16)));
    const uint32_t unit1 = Rows > 1 ? packed[s * kPackedRows + 1] : 0;
    const __m256 x1_even = _mm256_set1_ps(bf16_to_f32(uint16_t(unit1))), x1_odd = _mm256_set1_ps(bf16_to_f32(uint16_t(unit1 >> 16)));
#define FALCON_GROUP(g, c0, c1)                                                                              \
  {                                                                                                          \
    const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 16 * g));               \
    const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));                                   \
    const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(pairs, high_half));                              \
    c0 = _mm256_fmadd_ps(x0_odd, odd, _mm256_fmadd_ps(x0_even, even, c0));                                   \
    if (Rows > 1) c1 = _mm256_fmadd_ps(x1_odd, odd, _mm256_fmadd_ps(x1_even, even, c1));                     \
  }
    FALCON_GROUP(0, c00, c10) FALCON_GROUP(1, c01, c11) FALCON_GROUP(2, c02, c12) FALCON_GROUP(3, c03, c13)
#undef FALCON_GROUP
  }
  store_rows<Rows>(store, c00, c01, c02, c03, c10, c11, c12, c13);
}

// int8: the integer dot product of each step's quad, as |x| · (w with x's sign) so that vpmaddubsw's
// unsigned × signed byte products (at most 2 · 127 · 127 per pair) never saturate; the stored bytes
// w + 128 (dtype.h) become w by flipping their top bit. After each quantisation block the integer sums
// are scaled into float32 in `tile`.
template <int Rows>
void micro_i8(const uint32_t* packed, const uint8_t* panel, int64_t steps, const float* block_scales,
              int64_t quant_blocks, const TileStore& store) {
  __m256 tile[4 * kRowsPerTile];
  for (__m256& t : tile) t = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i top_bits = _mm256_set1_epi8(char(0x80));
  for (int64_t block = 0; block < quant_blocks; ++block) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    const int64_t block_end = std::min(steps, (block + 1) * kQuantSteps);
    for (int64_t s = block * kQuantSteps; s < block_end; ++s) {
      const uint8_t* step = panel + s * 4 * kPanelWidth;
      const __m256i w0 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(step)), top_bits);
      const __m256i w1 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 32)), top_bits);
      const __m256i w2 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 64)), top_bits);
      const __m256i w3 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 96)), top_bits);
#define FALCON_DOT(x, magnitude, w, c) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w, x)), ones))
      const __m256i x0 = _mm256_set1_epi32(int(packed[s * kPackedRows]));
      const __m256i m0 = _mm256_abs_epi8(x0);
      FALCON_DOT(x0, m0, w0, c00); FALCON_DOT(x0, m0, w1, c01); FALCON_DOT(x0, m0, w2, c02); FALCON_DOT(x0, m0, w3, c03);
      if (Rows > 1) {
        const __m256i x1 = _mm256_set1_epi32(int(packed[s * kPackedRows + 1]));
        const __m256i m1 = _mm256_abs_epi8(x1);
        FALCON_DOT(x1, m1, w0, c10); FALCON_DOT(x1, m1, w1, c11); FALCON_DOT(x1, m1, w2, c12); FALCON_DOT(x1, m1, w3, c13);
      }
#undef FALCON_DOT
    }
    const __m256 scale0 = _mm256_set1_ps(block_scales[block]);
    tile[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c00), scale0, tile[0]);
    tile[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c01), scale0, tile[1]);
    tile[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c02), scale0, tile[2]);
    tile[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c03), scale0, tile[3]);
    if (Rows > 1) {
      const __m256 scale1 = _mm256_set1_ps(block_scales[quant_blocks + block]);
      tile[4] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c10), scale1, tile[4]);
      tile[5] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c11), scale1, tile[5]);
      tile[6] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c12), scale1, tile[6]);
      tile[7] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c13), scale1, tile[7]);
    }
  }
  store(tile, 0);
  if (Rows > 1) store(tile + 4, 1);
}

// The tile of rows [m, m + tile_rows) of block m / kPackedRows against panel p, for every panel in range.
template <typename Micro>
void for_each_tile(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                   const Epilogue& epilogue, float* y, int64_t y_stride, Micro micro) {
  const float* scales = w.dtype == DType::Int8 ? w.scales.data() : nullptr;
  for (int64_t p = first_panel; p < end_panel; ++p) {
    const int64_t n0 = p * kPanelWidth;
    const int outputs = int(std::min<int64_t>(kPanelWidth, w.rows - n0));
    for (int64_t m = 0; m < x.rows; m += kRowsPerTile) {
      const TileStore store{y + m * y_stride, y_stride, n0, outputs, epilogue, scales};
      micro(m, int(std::min<int64_t>(kRowsPerTile, x.rows - m)), w.panel(p), store);
    }
  }
}

// The units of rows [m, m + kRowsPerTile): kRowsPerTile divides kPackedRows, so they share a block.
inline const uint32_t* tile_units(const PackedRows& x, int64_t m) {
  return x.units + (m / kPackedRows) * x.steps * kPackedRows + m % kPackedRows;
}

// One tile of each weight dtype: run<Rows>(x, m, panel, store) multiplies rows [m, m + Rows) of x by one panel.
template <typename Panel>
struct FloatTile {
  template <int Rows>
  static void run(const PackedRows& x, int64_t m, const void* panel, const TileStore& store) {
    micro_float<Panel, Rows>(reinterpret_cast<const float*>(tile_units(x, m)), static_cast<const typename Panel::Element*>(panel),
                             x.steps, store);
  }
};
struct Bf16Tile {
  template <int Rows>
  static void run(const PackedRows& x, int64_t m, const void* panel, const TileStore& store) {
    micro_bf16<Rows>(tile_units(x, m), static_cast<const uint16_t*>(panel), x.steps, store);
  }
};
struct Int8Tile {
  template <int Rows>
  static void run(const PackedRows& x, int64_t m, const void* panel, const TileStore& store) {
    micro_i8<Rows>(tile_units(x, m), static_cast<const uint8_t*>(panel), x.steps, x.block_scales + m * x.quant_blocks,
                   x.quant_blocks, store);
  }
};

template <typename Tile>
void matmul(const PackedRows& x, const WeightMatrix& w, int64_t first_panel, int64_t end_panel, const Epilogue& epilogue,
            float* y, int64_t y_stride) {
  for_each_tile(x, w, first_panel, end_panel, epilogue, y, y_stride,
                [&](int64_t m, int tile_rows, const void* panel, const TileStore& store) {
                  with_count<kRowsPerTile>(tile_rows, [&](auto rows) { Tile::template run<decltype(rows)::value>(x, m, panel, store); });
                });
}

double peak_ops(int64_t iterations, PeakOp op) {
  if (op == PeakOp::Int8Dot) {
    // The int8 kernel's inner sequence (sign, vpmaddubsw, vpmaddwd, add) on 8 independent chains.
    const __m256i ones = _mm256_set1_epi16(1), magnitude = _mm256_set1_epi8(3), w = _mm256_set1_epi8(-2);
#define FALCON_START(i) _mm256_set1_epi32(i)
    __m256i c0 = FALCON_START(0), c1 = FALCON_START(1), c2 = FALCON_START(2), c3 = FALCON_START(3);
    __m256i c4 = FALCON_START(4), c5 = FALCON_START(5), c6 = FALCON_START(6), c7 = FALCON_START(7);
#undef FALCON_START
    for (int64_t i = 0; i < iterations; ++i) {
#define FALCON_DOT(c) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w, c)), ones))
      FALCON_DOT(c0); FALCON_DOT(c1); FALCON_DOT(c2); FALCON_DOT(c3); FALCON_DOT(c4); FALCON_DOT(c5); FALCON_DOT(c6); FALCON_DOT(c7);
#undef FALCON_DOT
    }
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
                                           _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));
    volatile int sink = _mm256_extract_epi32(total, 0);
    (void)sink;
    // 8 chains × 32 byte multiply-adds × 2 operations.
    return double(iterations) * 8 * 32 * 2;
  }
  // float32 FMAs: also the ceiling of bf16 weights, which AVX2 widens to float32.
  // Distinct starting values: identical chains would be merged into one by the compiler.
#define FALCON_START(i) _mm256_set1_ps(1.0f + 0.001f * i)
  __m256 a0 = FALCON_START(0), a1 = FALCON_START(1), a2 = FALCON_START(2), a3 = FALCON_START(3), a4 = FALCON_START(4);
  __m256 a5 = FALCON_START(5), a6 = FALCON_START(6), a7 = FALCON_START(7), a8 = FALCON_START(8), a9 = FALCON_START(9);
#undef FALCON_START
  const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
#define FALCON_FMA(a) a = _mm256_fmadd_ps(a, m, b)
    FALCON_FMA(a0); FALCON_FMA(a1); FALCON_FMA(a2); FALCON_FMA(a3); FALCON_FMA(a4);
    FALCON_FMA(a5); FALCON_FMA(a6); FALCON_FMA(a7); FALCON_FMA(a8); FALCON_FMA(a9);
#undef FALCON_FMA
  }
  const __m256 total = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                     _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)), _mm256_add_ps(a8, a9)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  volatile float sink = lanes[0];
  (void)sink;
  return double(iterations) * 10 * 8 * 2;
}

// 8 stored KV elements as float32, exactly: bfloat16 is the top half of a float32, float16 widens by F16C.
inline __m256 widen8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 widen8(const Bf16* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline __m256 widen8(const F16* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
// The first min(remaining, 8) elements, zeros after them; reads nothing past them.
inline __m256 widen8(const float* p, int64_t remaining) { return load_f32(p, remaining); }
template <typename Element>
inline __m256 widen8(const Element* p, int64_t remaining) {
  if (remaining >= 8) return widen8(p);
  Element lanes[8] = {};
  std::memcpy(lanes, p, size_t(remaining) * sizeof(Element));
  return widen8(lanes);
}

// Value j is row j % kKeyBlock of block j / kKeyBlock; each column's sum runs over j in order.
template <typename Element>
void weighted_sum_one(const float* p, const void* const* value_blocks, int64_t count, int64_t d, float* out) {
  for (int64_t c = 0; c < d; c += 8) {
    const int64_t remaining = d - c;
    __m256 a = _mm256_setzero_ps();
    for (int64_t first = 0; first < count; first += kKeyBlock) {
      const Element* block = static_cast<const Element*>(value_blocks[first / kKeyBlock]) + c;
      const int64_t rows = std::min(kKeyBlock, count - first);
      for (int64_t r = 0; r < rows; ++r) a = _mm256_fmadd_ps(_mm256_set1_ps(p[first + r]), widen8(block + r * d, remaining), a);
    }
    if (remaining >= 8) _mm256_storeu_ps(out + c, a);
    else _mm256_maskstore_ps(out + c, lanes_below(remaining), a);
  }
}

// Block j / kKeyBlock of keys against one query, or two blocks side by side (four accumulator chains
// either way, so a lone decode query does not wait on one chain of d dependent multiply-adds).
template <typename Element, int Blocks>
void score_one_query(const float* q, const void* const* blocks, int64_t j, int64_t count, int64_t d, float* out) {
  const Element* block0 = static_cast<const Element*>(blocks[0]);
  const Element* block1 = Blocks > 1 ? static_cast<const Element*>(blocks[1]) : block0;
  __m256 low0 = _mm256_setzero_ps(), high0 = low0, low1 = low0, high1 = low0;
  for (int64_t c = 0; c < d; ++c) {
    const __m256 x = _mm256_set1_ps(q[c]);
    low0 = _mm256_fmadd_ps(x, widen8(block0 + c * kKeyBlock), low0);
    high0 = _mm256_fmadd_ps(x, widen8(block0 + c * kKeyBlock + 8), high0);
    if (Blocks > 1) {
      low1 = _mm256_fmadd_ps(x, widen8(block1 + c * kKeyBlock), low1);
      high1 = _mm256_fmadd_ps(x, widen8(block1 + c * kKeyBlock + 8), high1);
    }
  }
  _mm256_maskstore_ps(out + j, lanes_below(count - j), low0);
  _mm256_maskstore_ps(out + j + 8, lanes_below(count - j - 8), high0);
  if (Blocks > 1) {
    _mm256_maskstore_ps(out + j + kKeyBlock, lanes_below(count - j - kKeyBlock), low1);
    _mm256_maskstore_ps(out + j + kKeyBlock + 8, lanes_below(count - j - kKeyBlock - 8), high1);
  }
}

// Two queries at a time, each block of 16 keys in two vectors per query; a lone query (the last of
// an odd group) two blocks at a time. A lane's sum is the same chain of multiply-adds either way.
template <typename Element>
void key_scores_blocked(const float* q, int64_t q_stride, int64_t queries, const void* const* key_blocks, int64_t count,
                        int64_t d, float* scores, int64_t score_stride) {
  for (int64_t g = 0; g < queries; g += 2) {
    const float* q0 = q + g * q_stride;
    float* out0 = scores + g * score_stride;
    if (g + 1 == queries) {
      int64_t j = 0;
      for (; j + kKeyBlock < count; j += 2 * kKeyBlock) score_one_query<Element, 2>(q0, key_blocks + j / kKeyBlock, j, count, d, out0);
      if (j < count) score_one_query<Element, 1>(q0, key_blocks + j / kKeyBlock, j, count, d, out0);
      continue;
    }
    const float* q1 = q0 + q_stride;
    for (int64_t j = 0; j < count; j += kKeyBlock) {
      const Element* block = static_cast<const Element*>(key_blocks[j / kKeyBlock]);
      __m256 low0 = _mm256_setzero_ps(), high0 = low0, low1 = low0, high1 = low0;
      for (int64_t c = 0; c < d; ++c) {
        const __m256 key_low = widen8(block + c * kKeyBlock), key_high = widen8(block + c * kKeyBlock + 8);
        const __m256 x0 = _mm256_set1_ps(q0[c]), x1 = _mm256_set1_ps(q1[c]);
        low0 = _mm256_fmadd_ps(x0, key_low, low0);
        high0 = _mm256_fmadd_ps(x0, key_high, high0);
        low1 = _mm256_fmadd_ps(x1, key_low, low1);
        high1 = _mm256_fmadd_ps(x1, key_high, high1);
      }
      const __m256i mask_low = lanes_below(count - j), mask_high = lanes_below(count - j - 8);
      _mm256_maskstore_ps(out0 + j, mask_low, low0);
      _mm256_maskstore_ps(out0 + j + 8, mask_high, high0);
      _mm256_maskstore_ps(out0 + score_stride + j, mask_low, low1);
      _mm256_maskstore_ps(out0 + score_stride + j + 8, mask_high, high1);
    }
  }
}

template <typename Element>
void weighted_sum(const float* p, int64_t p_stride, int64_t queries, const void* const* value_blocks, int64_t count,
                  int64_t d, float* out, int64_t out_stride) {
  for (int64_t g = 0; g < queries; ++g) weighted_sum_one<Element>(p + g * p_stride, value_blocks, count, d, out + g * out_stride);
}

float exp_sum(float* x, int64_t n, float shift) {
  const __m256 shift_v = _mm256_set1_ps(shift);
  __m256 total = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    // Masked scores are -inf: their probability must be exactly zero, not exp's clamped minimum.
    const __m256 finite = _mm256_cmp_ps(v, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    const __m256 e = _mm256_and_ps(finite, exp256(_mm256_sub_ps(v, shift_v)));
    _mm256_storeu_ps(x + i, e);
    total = _mm256_add_ps(total, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

float stream_sum(const float* data, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(data + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(data + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(data + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(data + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

}  // namespace

const KernelTable& avx2_kernels() {
  static const KernelTable table{Isa::Avx2, matmul<FloatTile<F32Panel>>, matmul<Bf16Tile>, matmul<FloatTile<F16Panel>>,
                                 matmul<Int8Tile>, scalar_kernels().quantise_row, scalar_kernels().layer_norm_row,
                                 {key_scores_blocked<float>, weighted_sum<float>},
                                 {key_scores_blocked<Bf16>, weighted_sum<Bf16>},
                                 {key_scores_blocked<F16>, weighted_sum<F16>},
                                 scalar_kernels().mask_scores, exp_sum, peak_ops,
                                 stream_sum};
  return table;
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif

#endif  // FALCON_X86
