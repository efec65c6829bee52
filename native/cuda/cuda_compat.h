#pragma once
// What a kernel source of native/cuda/kernels includes first: the CUDA headers when nvcc compiles it,
// the host emulation (emu/cuda_emu.h) when a C++ compiler does. The sources then compile unchanged
// both ways, into different namespaces (FALCON_CUDA_NS), so one binary may hold both.
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#define FALCON_CUDA_NS falcon::cuda
#define FALCON_CUDA_EMULATED 0

namespace falcon::cuda {

// A __shared__ array; the emulated build checks its indices.
template <typename T, int N>
struct SharedArray {
  T values[N];
  __device__ __forceinline__ T& operator[](int i) { return values[i]; }
  __device__ __forceinline__ const T& operator[](int i) const { return values[i]; }
  __device__ __forceinline__ T* data() { return values; }
  static constexpr int size() { return N; }
};

__device__ __forceinline__ float half_bits_to_float(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }
__device__ __forceinline__ uint16_t float_to_half_bits(float value) { return __half_as_ushort(__float2half_rn(value)); }

void check_launch(const char* kernel);

}  // namespace falcon::cuda

// `kernel` is a pointer to a __global__ function (so template instances need no parentheses).
#define FALCON_LAUNCH(name, kernel, grid, block, stream, ...) \
  do {                                                        \
    (kernel)<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__);  \
    ::falcon::cuda::check_launch(name);                       \
  } while (0)

#elif defined(FALCON_CUDA_HOST_CALLER)
// Host C++ (not nvcc) that calls the real kernels (native/binding/cuda_test_real.cpp): the kernel
// headers declare falcon::cuda's entry points over the CUDA runtime's cudaStream_t, nothing more.
#include <cuda_runtime_api.h>

#define FALCON_CUDA_NS falcon::cuda
#define FALCON_CUDA_EMULATED 0

#else
#include "emu/cuda_emu.h"
#include "emu/wmma_emu.h"

#define FALCON_CUDA_NS falcon::cuda::emulated
#define FALCON_CUDA_EMULATED 1

namespace falcon::cuda::emulated {
using falcon::cuda_emu::SharedArray;
inline float half_bits_to_float(uint16_t bits) { return falcon::f16_to_f32(bits); }
inline uint16_t float_to_half_bits(float value) { return falcon::f32_to_f16(value); }
}  // namespace falcon::cuda::emulated

// __VA_ARGS__ is the stream, then the kernel's arguments (if any).
#define FALCON_LAUNCH(name, kernel, grid, block, ...) ::falcon::cuda_emu::launch((name), (kernel), (grid), (block), __VA_ARGS__)
#endif
