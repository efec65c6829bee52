// AVX-512 kernels (F, BW, VL, DQ, with BF16 dot products where the CPU has them). The matmul is a
// dot-product formulation over rows of x and rows of w (both contiguous along k), in tiles of up to
// 4 rows × 4 outputs: 16 accumulators, 8 loads per 16 FMAs, then one transposing reduction.
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

constexpr int kOutputsPerTile = 4;
constexpr int64_t kOutputsPerChunk = 64;  // a chunk of w rows stays in L2 while every x row passes over it

// [sum(a0), sum(a1), sum(a2), sum(a3)]
inline __m128 reduce4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
  const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
  // Per 128-bit lane: [a0, a1, a0, a1] + [a2, a3, a2, a3] halves → [a0, a1, a2, a3].
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

inline void store_tile_row(__m128 sums, const float* bias, int64_t n, int outputs, float* y_row) {
  alignas(16) float values[4];
  _mm_store_ps(values, sums);
  for (int j = 0; j < outputs; ++j) y_row[n + j] = values[j] + (bias != nullptr ? bias[n + j] : 0.0f);
}

// Loads 16 consecutive weights as float32; `mask` selects the valid tail lanes.
struct F32Weights {
  using Element = float;
  static __m512 load(const float* w, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, w); }
};
struct F16Weights {
  using Element = uint16_t;
  static __m512 load(const uint16_t* w, __mmask16 mask) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, w)); }
};
struct I8Weights {
  using Element = int8_t;
  static __m512 load(const int8_t* w, __mmask16 mask) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, w)));
  }
};

// The tile bodies below name their 16 accumulators one by one: held in an array, GCC 12 keeps them
// in memory and stores every one on each iteration.
#define FALCON_ZERO_ROW(r) __m512 acc##r##0 = _mm512_setzero_ps(), acc##r##1 = acc##r##0, acc##r##2 = acc##r##0, acc##r##3 = acc##r##0
#define FALCON_REDUCE_ROW(r) out[r] = reduce4(acc##r##0, acc##r##1, acc##r##2, acc##r##3)

// float32 activations against 16-wide weight loads of any storage type.
template <typename Weights, int Rows>
void tile_float(const float* x, int64_t x_stride, const typename Weights::Element* const* w, int64_t k, __m128* out) {
  FALCON_ZERO_ROW(0);
  FALCON_ZERO_ROW(1);
  FALCON_ZERO_ROW(2);
  FALCON_ZERO_ROW(3);
  const typename Weights::Element *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
#define FALCON_FMA_ROW(r)                                                       \
  if (Rows > r) {                                                               \
    const __m512 xv = _mm512_maskz_loadu_ps(mask, x + r * x_stride + i);        \
    acc##r##0 = _mm512_fmadd_ps(xv, wv0, acc##r##0);                            \
    acc##r##1 = _mm512_fmadd_ps(xv, wv1, acc##r##1);                            \
    acc##r##2 = _mm512_fmadd_ps(xv, wv2, acc##r##2);                            \
    acc##r##3 = _mm512_fmadd_ps(xv, wv3, acc##r##3);                            \
  }
#define FALCON_STEP                                                             \
  {                                                                             \
    const __m512 wv0 = Weights::load(w0 + i, mask), wv1 = Weights::load(w1 + i, mask); \
    const __m512 wv2 = Weights::load(w2 + i, mask), wv3 = Weights::load(w3 + i, mask); \
    FALCON_FMA_ROW(0) FALCON_FMA_ROW(1) FALCON_FMA_ROW(2) FALCON_FMA_ROW(3)     \
  }
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __mmask16 mask = 0xffff;
    FALCON_STEP
  }
  if (i < k) {
    const __mmask16 mask = __mmask16((1u << (k - i)) - 1);
    FALCON_STEP
  }
#undef FALCON_STEP
#undef FALCON_FMA_ROW
  FALCON_REDUCE_ROW(0);
  if (Rows > 1) FALCON_REDUCE_ROW(1);
  if (Rows > 2) FALCON_REDUCE_ROW(2);
  if (Rows > 3) FALCON_REDUCE_ROW(3);
}

// bfloat16 activations and weights: vdpbf16ps multiplies pairs and accumulates in float32.
template <int Rows>
void tile_bf16(const uint16_t* x, int64_t x_stride, const uint16_t* const* w, int64_t k, __m128* out) {
  FALCON_ZERO_ROW(0);
  FALCON_ZERO_ROW(1);
  FALCON_ZERO_ROW(2);
  FALCON_ZERO_ROW(3);
  const uint16_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
#define FALCON_DOT_ROW(r)                                                                 \
  if (Rows > r) {                                                                         \
    const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mask, x + r * x_stride + i);   \
    acc##r##0 = _mm512_dpbf16_ps(acc##r##0, xv, wv0);                                     \
    acc##r##1 = _mm512_dpbf16_ps(acc##r##1, xv, wv1);                                     \
    acc##r##2 = _mm512_dpbf16_ps(acc##r##2, xv, wv2);                                     \
    acc##r##3 = _mm512_dpbf16_ps(acc##r##3, xv, wv3);                                     \
  }
#define FALCON_STEP                                                                           \
  {                                                                                           \
    const __m512bh wv0 = (__m512bh)_mm512_maskz_loadu_epi16(mask, w0 + i);                   \
    const __m512bh wv1 = (__m512bh)_mm512_maskz_loadu_epi16(mask, w1 + i);                   \
    const __m512bh wv2 = (__m512bh)_mm512_maskz_loadu_epi16(mask, w2 + i);                   \
    const __m512bh wv3 = (__m512bh)_mm512_maskz_loadu_epi16(mask, w3 + i);                   \
    FALCON_DOT_ROW(0) FALCON_DOT_ROW(1) FALCON_DOT_ROW(2) FALCON_DOT_ROW(3)                   \
  }
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    const __mmask32 mask = 0xffffffffu;
    FALCON_STEP
  }
  if (i < k) {
    const __mmask32 mask = __mmask32((1u << (k - i)) - 1);
    FALCON_STEP
  }
#undef FALCON_STEP
#undef FALCON_DOT_ROW
  FALCON_REDUCE_ROW(0);
  if (Rows > 1) FALCON_REDUCE_ROW(1);
  if (Rows > 2) FALCON_REDUCE_ROW(2);
  if (Rows > 3) FALCON_REDUCE_ROW(3);
}
#undef FALCON_ZERO_ROW
#undef FALCON_REDUCE_ROW

// Runs `tile<Rows>(x rows, 4 weight row pointers, out)` over every 4-row group and 4-output group,
// chunking outputs so each chunk of weights is reused from cache by all rows.
template <typename Element, typename Tile>
void for_each_tile(const Element* x, int64_t x_stride, int64_t rows, int64_t n_begin, int64_t n_end,
                   const float* bias, float* y, int64_t y_stride, Tile tile) {
  for (int64_t chunk = n_begin; chunk < n_end; chunk += kOutputsPerChunk) {
    const int64_t chunk_end = std::min(n_end, chunk + kOutputsPerChunk);
    for (int64_t m = 0; m < rows; m += 4) {
      const int tile_rows = int(std::min<int64_t>(4, rows - m));
      for (int64_t n = chunk; n < chunk_end; n += kOutputsPerTile) {
        const int outputs = int(std::min<int64_t>(kOutputsPerTile, chunk_end - n));
        __m128 sums[4];
        tile(x + m * x_stride, tile_rows, n, outputs, sums);
        for (int r = 0; r < tile_rows; ++r) store_tile_row(sums[r], bias, n, outputs, y + (m + r) * y_stride);
      }
    }
  }
}

template <typename Weights>
void matmul_float(const float* x, int64_t x_stride, int64_t rows, const typename Weights::Element* w, int64_t n_begin,
                  int64_t n_end, int64_t k, const float* bias, float* y, int64_t y_stride) {
  using Element = typename Weights::Element;
  auto tile = [&](const float* x_rows, int tile_rows, int64_t n, int outputs, __m128* sums) {
    const Element* w_rows[kOutputsPerTile];
    // Missing outputs of a partial tile repeat the last row; their sums are not stored.
    for (int j = 0; j < kOutputsPerTile; ++j) w_rows[j] = w + (n + std::min(j, outputs - 1)) * k;
    switch (tile_rows) {
      case 1: tile_float<Weights, 1>(x_rows, x_stride, w_rows, k, sums); break;
      case 2: tile_float<Weights, 2>(x_rows, x_stride, w_rows, k, sums); break;
      case 3: tile_float<Weights, 3>(x_rows, x_stride, w_rows, k, sums); break;
      default: tile_float<Weights, 4>(x_rows, x_stride, w_rows, k, sums); break;
    }
  };
  for_each_tile(x, x_stride, rows, n_begin, n_end, bias, y, y_stride, tile);
}

void matmul_f32(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                int64_t k, const float* bias, float* y, int64_t y_stride) {
  matmul_float<F32Weights>(static_cast<const float*>(x), x_stride, rows, static_cast<const float*>(w), n_begin, n_end,
                           k, bias, y, y_stride);
}

void matmul_f16(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                int64_t k, const float* bias, float* y, int64_t y_stride) {
  matmul_float<F16Weights>(static_cast<const float*>(x), x_stride, rows, static_cast<const uint16_t*>(w), n_begin,
                           n_end, k, bias, y, y_stride);
}

void matmul_i8(const float* x, int64_t x_stride, int64_t rows, const int8_t* w, const float* scales, int64_t n_begin,
               int64_t n_end, int64_t k, const float* bias, float* y, int64_t y_stride) {
  matmul_float<I8Weights>(x, x_stride, rows, w, n_begin, n_end, k, nullptr, y, y_stride);
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      y[m * y_stride + n] = y[m * y_stride + n] * scales[n] + (bias != nullptr ? bias[n] : 0.0f);
    }
  }
}

void matmul_bf16(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                 int64_t k, const float* bias, float* y, int64_t y_stride) {
  const uint16_t* wb = static_cast<const uint16_t*>(w);
  const uint16_t* xb = static_cast<const uint16_t*>(x);
  auto tile = [&](const uint16_t* x_rows, int tile_rows, int64_t n, int outputs, __m128* sums) {
    const uint16_t* w_rows[kOutputsPerTile];
    for (int j = 0; j < kOutputsPerTile; ++j) w_rows[j] = wb + (n + std::min(j, outputs - 1)) * k;
    switch (tile_rows) {
      case 1: tile_bf16<1>(x_rows, x_stride, w_rows, k, sums); break;
      case 2: tile_bf16<2>(x_rows, x_stride, w_rows, k, sums); break;
      case 3: tile_bf16<3>(x_rows, x_stride, w_rows, k, sums); break;
      default: tile_bf16<4>(x_rows, x_stride, w_rows, k, sums); break;
    }
  };
  for_each_tile(xb, x_stride, rows, n_begin, n_end, bias, y, y_stride, tile);
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

}  // namespace

const KernelTable& avx512_kernels() {
  static const KernelTable table{Isa::Avx512, matmul_f32, matmul_bf16, matmul_f16, matmul_i8,
                                 weighted_sum, exp_sum,   gelu};
  return table;
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
