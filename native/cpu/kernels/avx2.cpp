// AVX2 + FMA + F16C kernels: the same dot-product tiles as avx512.cpp with 8-lane registers, in
// tiles of up to 2 rows × 4 outputs (16 ymm registers hold 8 accumulators and the operands).
// bfloat16 is widened to float32 by shifting (AVX2 has no bf16 dot product).
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

constexpr int kOutputsPerTile = 4;
constexpr int kRowsPerTile = 2;
constexpr int64_t kOutputsPerChunk = 64;

inline __m128 reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 s01 = _mm256_hadd_ps(a0, a1);
  const __m256 s23 = _mm256_hadd_ps(a2, a3);
  const __m256 s = _mm256_hadd_ps(s01, s23);  // per 128-bit half: [a0, a1, a2, a3]
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// Lane i is valid when i < remaining (the k tail).
inline __m256i tail_mask(int64_t remaining) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(remaining, 8))), lanes);
}

struct F32Values {
  using Element = float;
  static __m256 load(const float* p, int64_t remaining) {
    return remaining >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask(remaining));
  }
};

// Tails of 2-byte and 1-byte types are copied into a zero-padded buffer: AVX2 has no masked narrow loads.
template <typename T, typename Widen>
inline __m256 load_narrow(const T* p, int64_t remaining, Widen widen) {
  if (remaining >= 8) return widen(p);
  T padded[8] = {};
  std::copy_n(p, remaining, padded);
  return widen(padded);
}

struct F16Values {
  using Element = uint16_t;
  static __m256 load(const uint16_t* p, int64_t remaining) {
    return load_narrow(p, remaining, [](const uint16_t* q) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
    });
  }
};
struct BF16Values {
  using Element = uint16_t;
  static __m256 load(const uint16_t* p, int64_t remaining) {
    return load_narrow(p, remaining, [](const uint16_t* q) {
      const __m256i widened = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
      return _mm256_castsi256_ps(_mm256_slli_epi32(widened, 16));
    });
  }
};
struct I8Values {
  using Element = int8_t;
  static __m256 load(const int8_t* p, int64_t remaining) {
    return load_narrow(p, remaining, [](const int8_t* q) {
      return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
    });
  }
};

// Accumulators are named one by one: held in an array, GCC 12 keeps them in memory.
template <typename XValues, typename WValues, int Rows>
void tile(const typename XValues::Element* x, int64_t x_stride, const typename WValues::Element* const* w, int64_t k,
          __m128* out) {
  __m256 acc00 = _mm256_setzero_ps(), acc01 = acc00, acc02 = acc00, acc03 = acc00;
  __m256 acc10 = acc00, acc11 = acc00, acc12 = acc00, acc13 = acc00;
  const typename WValues::Element *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  for (int64_t i = 0; i < k; i += 8) {
    const int64_t remaining = k - i;
    const __m256 wv0 = WValues::load(w0 + i, remaining), wv1 = WValues::load(w1 + i, remaining);
    const __m256 wv2 = WValues::load(w2 + i, remaining), wv3 = WValues::load(w3 + i, remaining);
    const __m256 x0 = XValues::load(x + i, remaining);
    acc00 = _mm256_fmadd_ps(x0, wv0, acc00);
    acc01 = _mm256_fmadd_ps(x0, wv1, acc01);
    acc02 = _mm256_fmadd_ps(x0, wv2, acc02);
    acc03 = _mm256_fmadd_ps(x0, wv3, acc03);
    if (Rows > 1) {
      const __m256 x1 = XValues::load(x + x_stride + i, remaining);
      acc10 = _mm256_fmadd_ps(x1, wv0, acc10);
      acc11 = _mm256_fmadd_ps(x1, wv1, acc11);
      acc12 = _mm256_fmadd_ps(x1, wv2, acc12);
      acc13 = _mm256_fmadd_ps(x1, wv3, acc13);
    }
  }
  out[0] = reduce4(acc00, acc01, acc02, acc03);
  if (Rows > 1) out[1] = reduce4(acc10, acc11, acc12, acc13);
}

template <typename XValues, typename WValues>
void matmul(const typename XValues::Element* x, int64_t x_stride, int64_t rows, const typename WValues::Element* w,
            int64_t n_begin, int64_t n_end, int64_t k, const float* scales, const float* bias, float* y,
            int64_t y_stride) {
  for (int64_t chunk = n_begin; chunk < n_end; chunk += kOutputsPerChunk) {
    const int64_t chunk_end = std::min(n_end, chunk + kOutputsPerChunk);
    for (int64_t m = 0; m < rows; m += kRowsPerTile) {
      const int tile_rows = int(std::min<int64_t>(kRowsPerTile, rows - m));
      for (int64_t n = chunk; n < chunk_end; n += kOutputsPerTile) {
        const int outputs = int(std::min<int64_t>(kOutputsPerTile, chunk_end - n));
        const typename WValues::Element* w_rows[kOutputsPerTile];
        for (int j = 0; j < kOutputsPerTile; ++j) w_rows[j] = w + (n + std::min(j, outputs - 1)) * k;
        __m128 sums[kRowsPerTile];
        if (tile_rows == 2) tile<XValues, WValues, 2>(x + m * x_stride, x_stride, w_rows, k, sums);
        else tile<XValues, WValues, 1>(x + m * x_stride, x_stride, w_rows, k, sums);
        for (int r = 0; r < tile_rows; ++r) {
          alignas(16) float values[4];
          _mm_store_ps(values, sums[r]);
          float* y_row = y + (m + r) * y_stride;
          for (int j = 0; j < outputs; ++j) {
            const float scaled = scales != nullptr ? values[j] * scales[n + j] : values[j];
            y_row[n + j] = scaled + (bias != nullptr ? bias[n + j] : 0.0f);
          }
        }
      }
    }
  }
}

void matmul_f32(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                int64_t k, const float* bias, float* y, int64_t y_stride) {
  matmul<F32Values, F32Values>(static_cast<const float*>(x), x_stride, rows, static_cast<const float*>(w), n_begin,
                               n_end, k, nullptr, bias, y, y_stride);
}

void matmul_f16(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                int64_t k, const float* bias, float* y, int64_t y_stride) {
  matmul<F32Values, F16Values>(static_cast<const float*>(x), x_stride, rows, static_cast<const uint16_t*>(w), n_begin,
                               n_end, k, nullptr, bias, y, y_stride);
}

void matmul_bf16(const void* x, int64_t x_stride, int64_t rows, const void* w, int64_t n_begin, int64_t n_end,
                 int64_t k, const float* bias, float* y, int64_t y_stride) {
  matmul<BF16Values, BF16Values>(static_cast<const uint16_t*>(x), x_stride, rows, static_cast<const uint16_t*>(w),
                                 n_begin, n_end, k, nullptr, bias, y, y_stride);
}

void matmul_i8(const float* x, int64_t x_stride, int64_t rows, const int8_t* w, const float* scales, int64_t n_begin,
               int64_t n_end, int64_t k, const float* bias, float* y, int64_t y_stride) {
  matmul<F32Values, I8Values>(x, x_stride, rows, w, n_begin, n_end, k, scales, bias, y, y_stride);
}

void weighted_sum(const float* p, const float* v, int64_t count, int64_t d, float* out) {
  for (int64_t c = 0; c < d; c += 8) {
    const int64_t remaining = d - c;
    __m256 a = _mm256_setzero_ps();
    for (int64_t j = 0; j < count; ++j) a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), F32Values::load(v + j * d + c, remaining), a);
    if (remaining >= 8) _mm256_storeu_ps(out + c, a);
    else _mm256_maskstore_ps(out + c, tail_mask(remaining), a);
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

}  // namespace

const KernelTable& avx2_kernels() {
  static const KernelTable table{Isa::Avx2, matmul_f32, matmul_bf16, matmul_f16, matmul_i8,
                                 weighted_sum, exp_sum,   gelu};
  return table;
}

}  // namespace falcon::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
