// AVX2 + FMA + F16C kernels. The matmul micro-kernel holds 2 input rows × 32 outputs (one panel)
// in 8 registers (16 ymm registers in all); bfloat16 pairs are widened to float32 by shifting,
// since AVX2 has no bf16 dot product.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's intrinsic headers trip these on _mm*_undefined_*; vector arguments never cross a non-AVX ABI here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC target("avx2,fma,f16c")
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>

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
struct I8Panel {
  using Element = int8_t;
  static void load(const int8_t* p, __m256* w) {
    for (int i = 0; i < 4; ++i) {
      w[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * i))));
    }
  }
};

struct TileStore {
  float* y;
  int64_t y_stride;
  int64_t n0;
  int outputs;
  const float* bias;
  const float* scales;

  void operator()(const __m256* c, int row) const {
    alignas(32) float values[32];
    for (int i = 0; i < 4; ++i) _mm256_store_ps(values + 8 * i, c[i]);
    float* out = y + row * y_stride + n0;
    for (int j = 0; j < outputs; ++j) {
      const float scaled = scales != nullptr ? values[j] * scales[n0 + j] : values[j];
      out[j] = scaled + (bias != nullptr ? bias[n0 + j] : 0.0f);
    }
  }
};

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
  const __m256 row0[4] = {c00, c01, c02, c03};
  store(row0, 0);
  if (Rows > 1) {
    const __m256 row1[4] = {c10, c11, c12, c13};
    store(row1, 1);
  }
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
  const __m256 row0[4] = {c00, c01, c02, c03};
  store(row0, 0);
  if (Rows > 1) {
    const __m256 row1[4] = {c10, c11, c12, c13};
    store(row1, 1);
  }
}

template <typename Micro>
void for_each_tile(int64_t rows, const WeightMatrix& w, int64_t first_panel, int64_t end_panel, const float* bias,
                   float* y, int64_t y_stride, Micro micro) {
  const float* scales = w.dtype == DType::Int8 ? w.scales.data() : nullptr;
  for (int64_t p = first_panel; p < end_panel; ++p) {
    const int64_t n0 = p * kPanelWidth;
    const int outputs = int(std::min<int64_t>(kPanelWidth, w.rows - n0));
    for (int64_t m = 0; m < rows; m += kRowsPerTile) {
      const TileStore store{y + m * y_stride, y_stride, n0, outputs, bias, scales};
      micro(m / kPackedRows, m % kPackedRows, int(std::min<int64_t>(kRowsPerTile, rows - m)), w.panel(p), store);
    }
  }
}

template <typename Panel>
void matmul_float(const uint32_t* packed_x, int64_t rows, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                  const float* bias, float* y, int64_t y_stride) {
  const int64_t steps = w.cols;
  const float* packed = reinterpret_cast<const float*>(packed_x);
  for_each_tile(rows, w, first_panel, end_panel, bias, y, y_stride,
                [&](int64_t block, int64_t row_in_block, int tile_rows, const void* panel, const TileStore& store) {
                  const float* x = packed + block * steps * kPackedRows + row_in_block;
                  const auto* elements = static_cast<const typename Panel::Element*>(panel);
                  if (tile_rows == 2) micro_float<Panel, 2>(x, elements, steps, store);
                  else micro_float<Panel, 1>(x, elements, steps, store);
                });
}

void matmul_bf16(const uint32_t* packed_x, int64_t rows, const WeightMatrix& w, int64_t first_panel, int64_t end_panel,
                 const float* bias, float* y, int64_t y_stride) {
  const int64_t steps = w.stored_cols() / 2;
  for_each_tile(rows, w, first_panel, end_panel, bias, y, y_stride,
                [&](int64_t block, int64_t row_in_block, int tile_rows, const void* panel, const TileStore& store) {
                  const uint32_t* x = packed_x + block * steps * kPackedRows + row_in_block;
                  const auto* elements = static_cast<const uint16_t*>(panel);
                  if (tile_rows == 2) micro_bf16<2>(x, elements, steps, store);
                  else micro_bf16<1>(x, elements, steps, store);
                });
}

inline __m128 reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));  // per half: [a0, a1, a2, a3]
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

void key_scores(const float* q, const float* keys, int64_t count, int64_t d, float* out) {
  int64_t j = 0;
  for (; j + 4 <= count; j += 4) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float* k0 = keys + j * d;
    for (int64_t c = 0; c < d; c += 8) {
      const __m256 qv = load_f32(q + c, d - c);
      a0 = _mm256_fmadd_ps(qv, load_f32(k0 + c, d - c), a0);
      a1 = _mm256_fmadd_ps(qv, load_f32(k0 + d + c, d - c), a1);
      a2 = _mm256_fmadd_ps(qv, load_f32(k0 + 2 * d + c, d - c), a2);
      a3 = _mm256_fmadd_ps(qv, load_f32(k0 + 3 * d + c, d - c), a3);
    }
    _mm_storeu_ps(out + j, reduce4(a0, a1, a2, a3));
  }
  for (; j < count; ++j) {
    float sum = 0.0f;
    for (int64_t c = 0; c < d; ++c) sum += q[c] * keys[j * d + c];
    out[j] = sum;
  }
}

double peak_flops(int64_t iterations, bool) {
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

void weighted_sum(const float* p, const float* v, int64_t count, int64_t d, float* out) {
  for (int64_t c = 0; c < d; c += 8) {
    const int64_t remaining = d - c;
    __m256 a = _mm256_setzero_ps();
    for (int64_t j = 0; j < count; ++j) a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), load_f32(v + j * d + c, remaining), a);
    if (remaining >= 8) _mm256_storeu_ps(out + c, a);
    else _mm256_maskstore_ps(out + c, lanes_below(remaining), a);
  }
}

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

// GELU with erf from Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
void gelu(float* x, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
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
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(one, erf)));
  }
  for (; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
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
  static const KernelTable table{Isa::Avx2, matmul_float<F32Panel>, matmul_bf16, matmul_float<F16Panel>,
                                 matmul_float<I8Panel>, key_scores, weighted_sum, exp_sum, gelu, peak_flops,
                                 stream_sum};
  return table;
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
