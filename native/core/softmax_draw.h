#pragma once
// The arithmetic of a temperature draw over a logits row, shared by the host sampler (sampler.cpp) and
// the CUDA kernel that draws on the device (cuda/kernels/draw_tokens.cu), so that both compute the same
// weights bit for bit: V8's exp of (logit − max) / temperature in double precision.
//
// Contracting a * b + c into one fused multiply-add rounds once instead of twice and so changes the
// last bit of exp; JavaScript never contracts. The host compilers are told so here; nvcc is told with
// --fmad=false on the files that include this (CMakeLists.txt).
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FALCON_HOST_DEVICE __host__ __device__
#else
#define FALCON_HOST_DEVICE
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#endif

namespace falcon {
namespace softmax_draw {

FALCON_HOST_DEVICE inline uint32_t high_word(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return uint32_t(bits >> 32);
}

FALCON_HOST_DEVICE inline double from_words(uint32_t high, uint32_t low) {
  const uint64_t bits = (uint64_t(high) << 32) | low;
  double x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// Math.exp as V8 computes it (src/base/ieee754.cc: FreeBSD msun's e_exp.c, from fdlibm). The C
// library's exp differs from it in the last bit for about one argument in ten, which would shift
// softmax weights and, now and then, the token a draw lands on. The constant tables of the original
// are written as selections on the sign, so that device code can hold them.
FALCON_HOST_DEVICE inline double js_exp(double x) {
  constexpr double one = 1.0, o_threshold = 7.09782712893383973096e+02, u_threshold = -7.45133219101941108420e+02,
                   ln2_high = 6.93147180369123816490e-01, ln2_low = 1.90821492927058770002e-10,
                   inv_ln2 = 1.44269504088896338700e+00, P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03,
                   P3 = 6.61375632143793436117e-05, P4 = -1.65339022054652515390e-06, P5 = 4.13813679705723846039e-08,
                   E = 2.718281828459045, huge = 1.0e+300, two_m1000 = 9.33263618503218878990e-302,
                   two_1023 = 8.988465674311579539e307;
  double y, hi = 0.0, lo = 0.0, c, t, two_pk;
  int32_t k = 0;
  uint32_t hx = high_word(x);
  const int xsb = int((hx >> 31) & 1);
  hx &= 0x7FFFFFFF;

  if (hx >= 0x40862E42) {  // |x| >= 709.78...
    if (hx >= 0x7FF00000) {
      uint64_t bits;
      std::memcpy(&bits, &x, sizeof bits);
      if (((hx & 0xFFFFF) | uint32_t(bits)) != 0) return x + x;  // NaN
      return xsb == 0 ? x : 0.0;                                  // exp(+-inf) = {inf, 0}
    }
    if (x > o_threshold) return from_words(0x7FF00000u, 0);  // huge * huge: +Infinity (its overflow flag is not kept)
    if (x < u_threshold) return 0.0;  // two_m1000 * two_m1000: +0 (its underflow flag is not kept)
  }

  if (hx > 0x3FD62E42) {    // |x| > 0.5 ln2
    if (hx < 0x3FF0A2B2) {  // and |x| < 1.5 ln2
      if (x == 1.0) return E;
      hi = x - (xsb == 0 ? ln2_high : -ln2_high);
      lo = xsb == 0 ? ln2_low : -ln2_low;
      k = 1 - xsb - xsb;
    } else {
      k = int32_t(inv_ln2 * x + (xsb == 0 ? 0.5 : -0.5));
      t = k;
      hi = x - t * ln2_high;  // exact here
      lo = t * ln2_low;
    }
    x = hi - lo;
  } else if (hx < 0x3E300000) {  // |x| < 2**-28
    if (huge + x > one) return one + x;
  } else {
    k = 0;
  }

  t = x * x;
  if (k >= -1021) {
    two_pk = from_words(0x3FF00000u + (uint32_t(k) << 20), 0);
  } else {
    two_pk = from_words(0x3FF00000u + (uint32_t(k + 1000) << 20), 0);
  }
  c = x - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
  if (k == 0) return one - ((x * c) / (c - 2.0) - x);
  y = one - ((lo - (x * c) / (2.0 - c)) - hi);
  if (k >= -1021) {
    if (k == 1024) return y * 2.0 * two_1023;
    return y * two_pk;
  }
  return y * two_pk * two_m1000;
}

// A logit's unnormalised probability in a row whose largest logit is `max` (> -Infinity):
// exp((logit − max) / temperature), NaN and -Infinity logits weighing 0; with a +Infinity max, the
// softmax's limit, where the +Infinity logits share all the mass (exp(∞ − ∞) would be NaN).
FALCON_HOST_DEVICE inline double draw_weight(double logit, double max, double temperature) {
  constexpr double lowest = -1.7976931348623157e308;  // above -Infinity: NaN fails both tests
  if (max > 1.7976931348623157e308) return logit == max ? 1.0 : 0.0;
  return logit >= lowest ? js_exp((logit - max) / temperature) : 0.0;
}

}  // namespace softmax_draw
}  // namespace falcon

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
