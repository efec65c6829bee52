#pragma once
// Vector helpers and the tile store shared by the AVX2 kernel files (avx2.cpp, int4_avx2.cpp). Include it only from such
// a file, inside its FALCON_X86 guard, after the file's AVX2 target pragma: these functions take the
// target of the file that includes them. The standard headers it uses (<immintrin.h>, <algorithm>) are
// the includer's, before that pragma, as avx2.cpp explains.
#include "fetch_ahead.h"
#include "kernels.h"

namespace falcon::cpu {
namespace {

// One AVX-VNNI vpdpbusd: each int32 lane of `sums` += the four products of its unsigned bytes of
// `unsigned_bytes` and signed bytes of `signed_bytes`, exactly. asm with the VEX encoding spelled out
// ({vex}: the same mnemonic on ymm otherwise assembles as AVX-512 VNNI's EVEX form), for two reasons:
// the including file's target stays plain AVX2, so the compiler never emits the instruction on its own where
// the CPU may lack it; and, as avx512_common.h's dot_bytes, each accumulator of the chain is updated
// in its register. Call it only where cpu_features().avx_vnni.
inline void dot_bytes_vex(__m256i& sums, __m256i unsigned_bytes, __m256i signed_bytes) {
  asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(sums) : "x"(unsigned_bytes), "x"(signed_bytes));
}

// Lane i is valid when i < remaining.
inline __m256i lanes_below(int64_t remaining) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::max<int64_t>(0, std::min<int64_t>(remaining, 8)))), lanes);
}

inline __m256 load_f32(const float* p, int64_t remaining) {
  return remaining >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes_below(remaining));
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
    float* out = y + row * y_stride + n0;
    if (outputs == int(kPanelWidth)) {
      for (int i = 0; i < 4; ++i) {
        __m256 v = c[i];
        if (scales != nullptr) v = _mm256_mul_ps(v, _mm256_loadu_ps(scales + n0 + 8 * i));
        if (epilogue.bias != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(epilogue.bias + n0 + 8 * i));
        if (epilogue.gelu) v = gelu256(v);
        if (epilogue.accumulate) v = _mm256_add_ps(_mm256_loadu_ps(out + 8 * i), v);
        _mm256_storeu_ps(out + 8 * i, v);
      }
      return;
    }
    alignas(32) float values[32];
    for (int i = 0; i < 4; ++i) {
      __m256 v = c[i];
      if (scales != nullptr) v = _mm256_mul_ps(v, load_f32(scales + n0 + 8 * i, outputs - 8 * i));
      if (epilogue.bias != nullptr) v = _mm256_add_ps(v, load_f32(epilogue.bias + n0 + 8 * i, outputs - 8 * i));
      if (epilogue.gelu) v = gelu256(v);
      _mm256_store_ps(values + 8 * i, v);
    }
    for (int j = 0; j < outputs; ++j) out[j] = epilogue.accumulate ? out[j] + values[j] : values[j];
  }
};

// The store of the tile whose first row is m, against panel p.
inline TileStore tile_store(const WeightMatrix& w, int64_t p, int64_t m, const Epilogue& epilogue, const float* scales, float* y,
                            int64_t y_stride) {
  const int64_t n0 = p * kPanelWidth;
  return TileStore{y + m * y_stride, y_stride, n0, int(std::min<int64_t>(kPanelWidth, w.rows - n0)), epilogue, scales};
}

}  // namespace
}  // namespace falcon::cpu
