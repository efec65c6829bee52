// AVX-512 kernels (F, BW, VL, DQ, and BF16 pair dot products). The matmul micro-kernel holds a tile
// of up to 8 input rows × 32 outputs (one weight panel) in 16 registers: per step along k it loads
// the panel's two vectors once and multiplies them by each row's broadcast input (16 FMAs per 2 loads
// plus 8 broadcasts), over the whole of k, so every weight byte is read once per 8 rows.
// This file is compiled for AVX-512 but only called after cpu_features() says the CPU runs it.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's intrinsic headers trip these on _mm*_undefined_*; vector arguments never cross a non-AVX ABI here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c"))), apply_to = function)
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace falcon::cpu {
namespace {

inline __mmask16 lanes_below(int64_t count) {
  return count <= 0 ? __mmask16(0) : count >= 16 ? __mmask16(0xffff) : __mmask16((1u << count) - 1);
}

// Requests the cache lines of one step's weights (every 64 bytes; narrow steps share lines).
inline void prefetch_step(const void* at, size_t bytes) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(at);
  if (address % 64 >= bytes && bytes < 64) return;  // inside a line already requested
  for (size_t offset = 0; offset < bytes; offset += 64) _mm_prefetch(static_cast<const char*>(at) + offset, _MM_HINT_T1);
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
struct I8Panel {
  using Element = int8_t;
  static void load(const int8_t* p, __m512& low, __m512& high) {
    low = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    high = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  }
};

// Accumulators are named one by one: held in an array, GCC 12 keeps them in memory.
#define FALCON_ACCUMULATORS                                                                  \
  __m512 c0a = _mm512_setzero_ps(), c0b = c0a, c1a = c0a, c1b = c0a, c2a = c0a, c2b = c0a;   \
  __m512 c3a = c0a, c3b = c0a, c4a = c0a, c4b = c0a, c5a = c0a, c5b = c0a, c6a = c0a;        \
  __m512 c6b = c0a, c7a = c0a, c7b = c0a
#define FALCON_STORE_ROWS                                                                    \
  store_row(c0a, c0b, 0);                                                                    \
  if (Rows > 1) store_row(c1a, c1b, 1);                                                      \
  if (Rows > 2) store_row(c2a, c2b, 2);                                                      \
  if (Rows > 3) store_row(c3a, c3b, 3);                                                      \
  if (Rows > 4) store_row(c4a, c4b, 4);                                                      \
  if (Rows > 5) store_row(c5a, c5b, 5);                                                      \
  if (Rows > 6) store_row(c6a, c6b, 6);                                                      \
  if (Rows > 7) store_row(c7a, c7b, 7)

// Writes one row of a tile: scale (int8), bias, and only the outputs that exist.
struct TileStore {
  float* y;
  int64_t y_stride;
  int64_t n0;
  int outputs;
  const float* bias;
  const float* scales;

  void operator()(__m512 low, __m512 high, int row) const {
    const __mmask16 mask_low = lanes_below(outputs), mask_high = lanes_below(outputs - 16);
    if (scales != nullptr) {
      low = _mm512_mul_ps(low, _mm512_maskz_loadu_ps(mask_low, scales + n0));
      high = _mm512_mul_ps(high, _mm512_maskz_loadu_ps(mask_high, scales + n0 + 16));
    }
    if (bias != nullptr) {
      low = _mm512_add_ps(low, _mm512_maskz_loadu_ps(mask_low, bias + n0));
      high = _mm512_add_ps(high, _mm512_maskz_loadu_ps(mask_high, bias + n0 + 16));
    }
    float* out = y + row * y_stride + n0;
    _mm512_mask_storeu_ps(out, mask_low, low);
    if (outputs > 16) _mm512_mask_storeu_ps(out + 16, mask_high, high);
  }
};

// `prefetch` (or null) is the next panel: while the first row block streams this panel from memory,
// the same position of the next one is requested, so memory latency overlaps the multiply-adds.
template <typename Panel, int Rows>
void micro_float(const float* packed, const typename Panel::Element* panel, int64_t steps, const TileStore& store_row,
                 const typename Panel::Element* prefetch) {
  FALCON_ACCUMULATORS;
#define FALCON_ROW(r, a, b)                                                    \
  if (Rows > r) {                                                              \
    const __m512 x = _mm512_set1_ps(packed[s * kPackedRows + r]);              \
    a = _mm512_fmadd_ps(x, low, a);                                            \
    b = _mm512_fmadd_ps(x, high, b);                                           \
  }
  for (int64_t s = 0; s < steps; ++s) {
    if (prefetch != nullptr) prefetch_step(prefetch + s * kPanelWidth, kPanelWidth * sizeof(typename Panel::Element));
    __m512 low, high;
    Panel::load(panel + s * kPanelWidth, low, high);
    FALCON_ROW(0, c0a, c0b) FALCON_ROW(1, c1a, c1b) FALCON_ROW(2, c2a, c2b) FALCON_ROW(3, c3a, c3b)
    FALCON_ROW(4, c4a, c4b) FALCON_ROW(5, c5a, c5b) FALCON_ROW(6, c6a, c6b) FALCON_ROW(7, c7a, c7b)
  }
#undef FALCON_ROW
  FALCON_STORE_ROWS;
}

// bf16: each step is a pair of k; vdpbf16ps multiplies the pairs and accumulates in float32.
template <int Rows>
void micro_bf16(const uint32_t* packed, const uint16_t* panel, int64_t steps, const TileStore& store_row,
                const uint16_t* prefetch) {
  FALCON_ACCUMULATORS;
#define FALCON_ROW(r, a, b)                                                              \
  if (Rows > r) {                                                                        \
    const __m512bh x = (__m512bh)_mm512_set1_epi32(int(packed[s * kPackedRows + r]));   \
    a = _mm512_dpbf16_ps(a, x, low);                                                     \
    b = _mm512_dpbf16_ps(b, x, high);                                                    \
  }
  for (int64_t s = 0; s < steps; ++s) {
    if (prefetch != nullptr) prefetch_step(prefetch + s * 2 * kPanelWidth, 2 * kPanelWidth * sizeof(uint16_t));
    const __m512bh low = (__m512bh)_mm512_loadu_si512(panel + s * 2 * kPanelWidth);
    const __m512bh high = (__m512bh)_mm512_loadu_si512(panel + s * 2 * kPanelWidth + kPanelWidth);
    FALCON_ROW(0, c0a, c0b) FALCON_ROW(1, c1a, c1b) FALCON_ROW(2, c2a, c2b) FALCON_ROW(3, c3a, c3b)
    FALCON_ROW(4, c4a, c4b) FALCON_ROW(5, c5a, c5b) FALCON_ROW(6, c6a, c6b) FALCON_ROW(7, c7a, c7b)
  }
#undef FALCON_ROW
  FALCON_STORE_ROWS;
}
#undef FALCON_ACCUMULATORS
#undef FALCON_STORE_ROWS

// Panels outer, row blocks inner: a panel (at most a few hundred KB) stays in L2 while every row
// block passes over it; for a single row it is streamed from memory exactly once.
template <typename Micro>
void for_each_tile(int64_t rows, const WeightMatrix& w, int64_t first_panel, int64_t end_panel, const float* bias,
                   float* y, int64_t y_stride, Micro micro) {
  const float* scales = w.dtype == DType::Int8 ? w.scales.data() : nullptr;
  for (int64_t p = first_panel; p < end_panel; ++p) {
    const int64_t n0 = p * kPanelWidth;
    const int outputs = int(std::min<int64_t>(kPanelWidth, w.rows - n0));
    for (int64_t block = 0; block * kPackedRows < rows; ++block) {
      const int block_rows = int(std::min<int64_t>(kPackedRows, rows - block * kPackedRows));
      const TileStore store{y + block * kPackedRows * y_stride, y_stride, n0, outputs, bias, scales};
      const void* prefetch = block == 0 && p + 1 < end_panel ? w.panel(p + 1) : nullptr;
      micro(block, block_rows, w.panel(p), store, prefetch);
    }
  }
}

template <typename Panel>
void matmul_float(const uint32_t* packed_x, int64_t rows, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                  const float* bias, float* y, int64_t y_stride) {
  using Element = typename Panel::Element;
  const int64_t steps = w.cols;
  const float* packed = reinterpret_cast<const float*>(packed_x);
  for_each_tile(rows, w, first_panel, end_panel, bias, y, y_stride,
                [&](int64_t block, int block_rows, const void* panel_bytes, const TileStore& store, const void* prefetch_bytes) {
                  const float* x = packed + block * steps * kPackedRows;
                  const Element* panel = static_cast<const Element*>(panel_bytes);
                  const Element* prefetch = static_cast<const Element*>(prefetch_bytes);
                  switch (block_rows) {
                    case 1: micro_float<Panel, 1>(x, panel, steps, store, prefetch); break;
                    case 2: micro_float<Panel, 2>(x, panel, steps, store, prefetch); break;
                    case 3: micro_float<Panel, 3>(x, panel, steps, store, prefetch); break;
                    case 4: micro_float<Panel, 4>(x, panel, steps, store, prefetch); break;
                    case 5: micro_float<Panel, 5>(x, panel, steps, store, prefetch); break;
                    case 6: micro_float<Panel, 6>(x, panel, steps, store, prefetch); break;
                    case 7: micro_float<Panel, 7>(x, panel, steps, store, prefetch); break;
                    default: micro_float<Panel, 8>(x, panel, steps, store, prefetch); break;
                  }
                });
}

void matmul_bf16(const uint32_t* packed_x, int64_t rows, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                 const float* bias, float* y, int64_t y_stride) {
  const int64_t steps = w.stored_cols() / 2;
  for_each_tile(rows, w, first_panel, end_panel, bias, y, y_stride,
                [&](int64_t block, int block_rows, const void* panel_bytes, const TileStore& store, const void* prefetch_bytes) {
                  const uint32_t* x = packed_x + block * steps * kPackedRows;
                  const uint16_t* panel = static_cast<const uint16_t*>(panel_bytes);
                  const uint16_t* prefetch = static_cast<const uint16_t*>(prefetch_bytes);
                  switch (block_rows) {
                    case 1: micro_bf16<1>(x, panel, steps, store, prefetch); break;
                    case 2: micro_bf16<2>(x, panel, steps, store, prefetch); break;
                    case 3: micro_bf16<3>(x, panel, steps, store, prefetch); break;
                    case 4: micro_bf16<4>(x, panel, steps, store, prefetch); break;
                    case 5: micro_bf16<5>(x, panel, steps, store, prefetch); break;
                    case 6: micro_bf16<6>(x, panel, steps, store, prefetch); break;
                    case 7: micro_bf16<7>(x, panel, steps, store, prefetch); break;
                    default: micro_bf16<8>(x, panel, steps, store, prefetch); break;
                  }
                });
}

// [sum(a0), sum(a1), sum(a2), sum(a3)]
inline __m128 reduce4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
  const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

// Four keys at a time, each a dot product along the head dimension.
void key_scores(const float* q, const float* keys, int64_t count, int64_t d, float* out) {
  int64_t j = 0;
  for (; j + 4 <= count; j += 4) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float* k0 = keys + j * d;
    for (int64_t c = 0; c < d; c += 16) {
      const __mmask16 mask = lanes_below(d - c);
      const __m512 qv = _mm512_maskz_loadu_ps(mask, q + c);
      a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mask, k0 + c), a0);
      a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mask, k0 + d + c), a1);
      a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mask, k0 + 2 * d + c), a2);
      a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mask, k0 + 3 * d + c), a3);
    }
    _mm_storeu_ps(out + j, reduce4(a0, a1, a2, a3));
  }
  for (; j < count; ++j) {
    __m512 a = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; c += 16) {
      const __mmask16 mask = lanes_below(d - c);
      a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, q + c), _mm512_maskz_loadu_ps(mask, keys + j * d + c), a);
    }
    out[j] = _mm512_reduce_add_ps(a);
  }
}

double peak_flops(int64_t iterations, bool bf16) {
  // Distinct starting values: identical chains would be merged into one by the compiler.
#define FALCON_START(i) _mm512_set1_ps(1.0f + 0.001f * i)
  __m512 a0 = FALCON_START(0), a1 = FALCON_START(1), a2 = FALCON_START(2), a3 = FALCON_START(3);
  __m512 a4 = FALCON_START(4), a5 = FALCON_START(5), a6 = FALCON_START(6), a7 = FALCON_START(7);
  __m512 a8 = FALCON_START(8), a9 = FALCON_START(9), a10 = FALCON_START(10), a11 = FALCON_START(11);
#undef FALCON_START
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  const __m512bh pair = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // (1.0, 1.0) in bf16
  for (int64_t i = 0; i < iterations; ++i) {
    if (bf16) {
#define FALCON_DP(a) a = _mm512_dpbf16_ps(a, pair, pair)
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
  // 12 registers × 16 lanes × (2 flops per FMA, or 4 per bf16 pair dot product).
  return double(iterations) * 12 * 16 * (bf16 ? 4 : 2);
}

void weighted_sum(const float* p, const float* v, int64_t count, int64_t d, float* out) {
  int64_t c = 0;
  for (; c + 64 <= d; c += 64) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (int64_t j = 0; j < count; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j]);
      const float* row = v + j * d + c;
      a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(row), a0);
      a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(row + 16), a1);
      a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(row + 32), a2);
      a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(row + 48), a3);
    }
    _mm512_storeu_ps(out + c, a0);
    _mm512_storeu_ps(out + c + 16, a1);
    _mm512_storeu_ps(out + c + 32, a2);
    _mm512_storeu_ps(out + c + 48, a3);
  }
  for (; c < d; c += 16) {
    const __mmask16 mask = d - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (d - c)) - 1);
    __m512 a = _mm512_setzero_ps();
    for (int64_t j = 0; j < count; ++j) a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_maskz_loadu_ps(mask, v + j * d + c), a);
    _mm512_mask_storeu_ps(out + c, mask, a);
  }
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

float exp_sum(float* x, int64_t n, float shift) {
  const __m512 shift_v = _mm512_set1_ps(shift);
  __m512 total = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    // Masked scores are -inf: their probability must be exactly zero, not exp's clamped minimum.
    const __mmask16 finite = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ) & mask;
    const __m512 e = _mm512_maskz_mov_ps(finite, exp512(_mm512_sub_ps(v, shift_v)));
    _mm512_mask_storeu_ps(x + i, mask, e);
    total = _mm512_mask_add_ps(total, mask, total, e);
  }
  return _mm512_reduce_add_ps(total);
}

// GELU with erf from Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
void gelu(float* x, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
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
    _mm512_mask_storeu_ps(x + i, mask, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(one, erf)));
  }
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
  static const KernelTable table{Isa::Avx512, matmul_float<F32Panel>, matmul_bf16, matmul_float<F16Panel>,
                                 matmul_float<I8Panel>, key_scores, weighted_sum, exp_sum, gelu, peak_flops,
                                 stream_sum};
  return table;
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
