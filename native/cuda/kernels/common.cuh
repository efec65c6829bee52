#pragma once
// Device helpers the kernels share; included after ../cuda_compat.h.
#include <string>

#include "../../core/error.h"
#include "../cuda_compat.h"

namespace FALCON_CUDA_NS {

__device__ __forceinline__ float bf16_bits_to_float(uint16_t bits) { return __int_as_float(int(uint32_t(bits) << 16)); }

// Round to nearest even; NaN stays NaN (falcon::f32_to_bf16).
__device__ __forceinline__ uint16_t float_to_bf16_bits(float value) {
  uint32_t bits = uint32_t(__float_as_int(value));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kFullMask, value, offset);
  return value;
}

// The block's largest (take_max: fmaxf, so NaN loses to any number) or sum of `value`, over its threads
// (Warps warps, all of them calling); every thread gets it. `partials` is the block's scratch, free
// again when this returns.
template <int Warps>
__device__ float block_reduce(float value, bool take_max, SharedArray<float, Warps>& partials) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(kFullMask, value, offset);
    value = take_max ? fmaxf(value, other) : value + other;
  }
  if (threadIdx.x % 32 == 0) partials[int(threadIdx.x) / 32] = value;
  __syncthreads();
  float total = partials[0];
  for (int w = 1; w < Warps; ++w) total = take_max ? fmaxf(total, partials[w]) : total + partials[w];
  __syncthreads();
  return total;
}

// Host-side size checks of the launchers.
inline void require_sizes(bool condition, const char* kernel, const char* what) {
  if (!condition) throw Error(ErrorKind::Input, std::string(kernel) + ": " + what);
}

// A grid dimension: the count of `per` items, checked against CUDA's limit on grid.x.
inline unsigned grid_blocks(int64_t items, int64_t per, const char* kernel) {
  const int64_t blocks = (items + per - 1) / per;
  require_sizes(blocks <= 2147483647, kernel, "too many blocks for one launch");
  return unsigned(blocks < 1 ? 1 : blocks);
}

}  // namespace FALCON_CUDA_NS
