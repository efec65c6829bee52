// Tiled GEMMs: strict float32 (every output summed in k order; float32, bf16, f16 or int8 weights) and
// bf16/f16 on the tensor cores; and the few-row GEMVs.
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

__device__ __forceinline__ float apply_epilogue(float sum, int64_t n, const GemmEpilogue& epilogue, const float* y_old) {
  if (epilogue.bias != nullptr) sum += epilogue.bias[n];
  if (epilogue.gelu) sum = gelu_erf(sum);
  return epilogue.accumulate ? *y_old + sum : sum;
}

// The strict GEMM's operands as they are staged into shared memory, float32 either way: x as it is,
// or rounded to bfloat16 against bfloat16 weights (the CPU's bfloat16 matmul multiplies in bfloat16,
// whose products are exact in float32); weights widened exactly from their element type.
template <Element W>
__device__ __forceinline__ float stage_input(float value) {
  return W == Element::BF16 ? bf16_bits_to_float(float_to_bf16_bits(value)) : value;
}

template <Element W>
__device__ __forceinline__ float stage_weight(const void* w, int64_t i) {
  if (W == Element::F32) return static_cast<const float*>(w)[i];
  if (W == Element::BF16) return bf16_bits_to_float(static_cast<const uint16_t*>(w)[i]);
  if (W == Element::F16) return half_bits_to_float(static_cast<const uint16_t*>(w)[i]);
  return float(static_cast<const int8_t*>(w)[i]);
}

// float32: 64×64 outputs per block of 16×16 threads, 4×4 per thread (rows ty + 16i, columns tx + 16j,
// so a warp's shared reads spread over the banks), k in tiles of 16. Int8 sums are scaled per output
// (scales[n]) before the epilogue.
constexpr int kF32Tile = 64;
constexpr int kF32Depth = 16;
constexpr int kF32Threads = 256;

template <Element W>
__global__ void __launch_bounds__(kF32Threads)
    gemm_f32_kernel(const float* x, int64_t m, int64_t k, const void* w, const float* scales, int64_t n, GemmEpilogue epilogue,
                    float* y) {
  __shared__ SharedArray<SharedArray<float, kF32Tile>, kF32Depth> x_tile;  // [k][row]
  __shared__ SharedArray<SharedArray<float, kF32Tile>, kF32Depth> w_tile;  // [k][output]
  const int tx = int(threadIdx.x) % 16, ty = int(threadIdx.x) / 16;
  const int64_t row0 = int64_t(blockIdx.y) * kF32Tile, col0 = int64_t(blockIdx.x) * kF32Tile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < k; k0 += kF32Depth) {
    // 1024 elements of each tile, 4 per thread; consecutive threads read consecutive k.
    for (int e = int(threadIdx.x); e < kF32Tile * kF32Depth; e += kF32Threads) {
      const int r = e / kF32Depth, kk = e % kF32Depth;
      const int64_t kg = k0 + kk;
      x_tile[kk][r] = row0 + r < m && kg < k ? stage_input<W>(x[(row0 + r) * k + kg]) : 0.0f;
      w_tile[kk][r] = col0 + r < n && kg < k ? stage_weight<W>(w, (col0 + r) * k + kg) : 0.0f;
    }
    __syncthreads();
    const int depth = int(k - k0 < kF32Depth ? k - k0 : kF32Depth);
    for (int kk = 0; kk < depth; ++kk) {
      float a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = x_tile[kk][ty + 16 * i];
      for (int j = 0; j < 4; ++j) b[j] = w_tile[kk][tx + 16 * j];
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      const int64_t row = row0 + ty + 16 * i, col = col0 + tx + 16 * j;
      if (row < m && col < n) {
        const float sum = W == Element::I8 ? acc[i][j] * scales[col] : acc[i][j];
        y[row * n + col] = apply_epilogue(sum, col, epilogue, &y[row * n + col]);
      }
    }
  }
}

// wmma: 64×64 outputs per block of 4 warps, each warp 32×32 (2×2 fragments of 16×16), k in steps
// of 16 staged through shared memory (rows padded to 24 elements: ldm must be a multiple of 8
// and fragment pointers 32-byte aligned), outputs staged through shared memory for the epilogue.
// Pair (float16 weights): x comes as split_f16's high and low rows, each fragment of w multiplies
// both, and each row's sum is scaled back by its row_unscale.
constexpr int kWmmaTile = 64;
constexpr int kWmmaThreads = 128;
constexpr int kStagePitch = 24;
constexpr int kOutPitch = 68;

template <typename T, bool Pair>
__global__ void __launch_bounds__(kWmmaThreads)
    gemm_wmma_kernel(WmmaInput x, int64_t m, int64_t k, const uint16_t* w, int64_t n, GemmEpilogue epilogue, float* y) {
  using namespace nvcuda;
  alignas(32) __shared__ SharedArray<uint16_t, kWmmaTile * kStagePitch> x_stage;                // [row][k]
  alignas(32) __shared__ SharedArray<uint16_t, Pair ? kWmmaTile * kStagePitch : 16> low_stage;  // [row][k]
  alignas(32) __shared__ SharedArray<uint16_t, kWmmaTile * kStagePitch> w_stage;                // [output][k]
  alignas(32) __shared__ SharedArray<float, kWmmaTile * kOutPitch> out_stage;                   // [row][output]
  const int warp = int(threadIdx.x) / 32;
  const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;
  const int64_t row0 = int64_t(blockIdx.y) * kWmmaTile, col0 = int64_t(blockIdx.x) * kWmmaTile;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }
  for (int64_t k0 = 0; k0 < k; k0 += 16) {
    for (int e = int(threadIdx.x); e < kWmmaTile * 16; e += kWmmaThreads) {
      const int r = e / 16, kk = e % 16;
      const int64_t kg = k0 + kk;
      const bool in_x = row0 + r < m && kg < k;
      x_stage[r * kStagePitch + kk] = in_x ? x.high[(row0 + r) * k + kg] : uint16_t(0);
      if (Pair) low_stage[r * kStagePitch + kk] = in_x ? x.low[(row0 + r) * k + kg] : uint16_t(0);
      w_stage[r * kStagePitch + kk] = col0 + r < n && kg < k ? w[(col0 + r) * k + kg] : uint16_t(0);
    }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[2];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[2];
    // b's tile is w[output][k] read as [k][output]: column-major with the same pitch.
    for (int j = 0; j < 2; ++j) {
      wmma::load_matrix_sync(b[j], reinterpret_cast<const T*>(w_stage.data()) + (warp_col + 16 * j) * kStagePitch, kStagePitch);
    }
    for (int i = 0; i < 2; ++i) {
      wmma::load_matrix_sync(a[i], reinterpret_cast<const T*>(x_stage.data()) + (warp_row + 16 * i) * kStagePitch, kStagePitch);
    }
    for (int i = 0; i < 2; ++i) {
      for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    if (Pair) {
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(a[i], reinterpret_cast<const T*>(low_stage.data()) + (warp_row + 16 * i) * kStagePitch, kStagePitch);
      }
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(out_stage.data() + (warp_row + 16 * i) * kOutPitch + warp_col + 16 * j, acc[i][j], kOutPitch,
                              wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int e = int(threadIdx.x); e < kWmmaTile * kWmmaTile; e += kWmmaThreads) {
    const int r = e / kWmmaTile, c = e % kWmmaTile;
    const int64_t row = row0 + r, col = col0 + c;
    if (row < m && col < n) {
      const float sum = Pair ? out_stage[r * kOutPitch + c] * x.row_unscale[row] : out_stage[r * kOutPitch + c];
      y[row * n + col] = apply_epilogue(sum, col, epilogue, &y[row * n + col]);
    }
  }
}

// GEMV: one warp per output, 4 outputs per block; each lane strides along k, then the warp adds up.
constexpr int kGemvWarps = 4;

template <typename Load>
__device__ __forceinline__ void gemv_body(const float* x, int m, int64_t k, int64_t n, Load load_weight, bool round_x_to_bf16,
                                          const float* scales, const GemmEpilogue& epilogue, float* y) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t output = int64_t(blockIdx.x) * kGemvWarps + int(threadIdx.x) / 32;
  // Whole warps leave together, so the shuffles below always see all 32 lanes.
  if (output >= n) return;
  float acc[kGemvMaxRows] = {};
  for (int64_t c = lane; c < k; c += 32) {
    const float weight = load_weight(output * k + c);
    for (int r = 0; r < m; ++r) {
      const float input = round_x_to_bf16 ? bf16_bits_to_float(float_to_bf16_bits(x[r * k + c])) : x[r * k + c];
      acc[r] += input * weight;
    }
  }
  for (int r = 0; r < m; ++r) {
    float sum = warp_sum(acc[r]);
    if (lane == 0) {
      if (scales != nullptr) sum *= scales[output];
      y[r * n + output] = apply_epilogue(sum, output, epilogue, &y[r * n + output]);
    }
  }
}

__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const float* x, int m, int64_t k, const void* w, Element type, int64_t n, GemmEpilogue epilogue, float* y) {
  if (type == Element::F32) {
    const float* weights = static_cast<const float*>(w);
    gemv_body(x, m, k, n, [weights](int64_t i) { return weights[i]; }, false, nullptr, epilogue, y);
  } else if (type == Element::BF16) {
    const uint16_t* weights = static_cast<const uint16_t*>(w);
    gemv_body(x, m, k, n, [weights](int64_t i) { return bf16_bits_to_float(weights[i]); }, true, nullptr, epilogue, y);
  } else {
    const uint16_t* weights = static_cast<const uint16_t*>(w);
    gemv_body(x, m, k, n, [weights](int64_t i) { return half_bits_to_float(weights[i]); }, false, nullptr, epilogue, y);
  }
}

__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_int8_kernel(const float* x, int m, int64_t k, const int8_t* q, const float* scales, int64_t n, GemmEpilogue epilogue,
                     float* y) {
  gemv_body(x, m, k, n, [q](int64_t i) { return float(q[i]); }, false, scales, epilogue, y);
}

void check_gemm(const char* kernel, int64_t m, int64_t k, int64_t n) {
  require_sizes(m >= 0 && k > 0 && n > 0, kernel, "m must be non-negative, k and n positive");
}

}  // namespace

void gemm_f32(const float* x, int64_t m, int64_t k, const void* w, Element type, const float* scales, int64_t n,
              const GemmEpilogue& epilogue, float* y, cudaStream_t stream) {
  check_gemm("gemm_f32", m, k, n);
  require_sizes((m + kF32Tile - 1) / kF32Tile <= 65535, "gemm_f32", "too many rows for one launch");
  require_sizes((type == Element::I8) == (scales != nullptr), "gemm_f32", "int8 weights need their scales, other types take none");
  if (m == 0) return;
  const dim3 grid(grid_blocks(n, kF32Tile, "gemm_f32"), unsigned((m + kF32Tile - 1) / kF32Tile));
  if (type == Element::F32) {
    const auto kernel = &gemm_f32_kernel<Element::F32>;
    FALCON_LAUNCH("gemm_f32", kernel, grid, dim3(kF32Threads), stream, x, m, k, w, scales, n, epilogue, y);
  } else if (type == Element::BF16) {
    const auto kernel = &gemm_f32_kernel<Element::BF16>;
    FALCON_LAUNCH("gemm_f32_bf16", kernel, grid, dim3(kF32Threads), stream, x, m, k, w, scales, n, epilogue, y);
  } else if (type == Element::F16) {
    const auto kernel = &gemm_f32_kernel<Element::F16>;
    FALCON_LAUNCH("gemm_f32_f16", kernel, grid, dim3(kF32Threads), stream, x, m, k, w, scales, n, epilogue, y);
  } else {
    const auto kernel = &gemm_f32_kernel<Element::I8>;
    FALCON_LAUNCH("gemm_f32_i8", kernel, grid, dim3(kF32Threads), stream, x, m, k, w, scales, n, epilogue, y);
  }
}

size_t wmma_input_bytes(Element type, int64_t m, int64_t k) {
  const size_t values = size_t(m * k);
  if (type == Element::BF16) return values * sizeof(uint16_t);
  if (type == Element::F16) return 2 * values * sizeof(uint16_t) + size_t(m) * sizeof(float);
  return 0;
}

WmmaInput stage_wmma_input(const float* x, int64_t m, int64_t k, Element type, void* staging, cudaStream_t stream) {
  require_sizes(type == Element::BF16 || type == Element::F16, "stage_wmma_input", "the tensor-core GEMM takes bfloat16 or float16");
  uint16_t* high = static_cast<uint16_t*>(staging);
  if (type == Element::BF16) {
    round_to(x, m * k, Element::BF16, high, stream);
    return WmmaInput{high, nullptr, nullptr};
  }
  uint16_t* low = high + m * k;
  float* row_unscale = reinterpret_cast<float*>(low + m * k);  // 4-byte aligned: 4 · m · k bytes in
  split_f16(x, m, k, high, low, row_unscale, stream);
  return WmmaInput{high, low, row_unscale};
}

void gemm_wmma(const WmmaInput& x, Element type, int64_t m, int64_t k, const uint16_t* w, int64_t n,
               const GemmEpilogue& epilogue, float* y, cudaStream_t stream) {
  check_gemm("gemm_wmma", m, k, n);
  require_sizes(type == Element::BF16 || type == Element::F16, "gemm_wmma", "the tensor-core GEMM takes bfloat16 or float16");
  const bool pair = x.low != nullptr && x.row_unscale != nullptr;
  require_sizes(type == Element::F16 ? pair : x.low == nullptr && x.row_unscale == nullptr, "gemm_wmma",
                "float16 weights take split_f16's high, low and row scales; bfloat16 weights the rounded input alone");
  require_sizes((m + kWmmaTile - 1) / kWmmaTile <= 65535, "gemm_wmma", "too many rows for one launch");
  if (m == 0) return;
  const dim3 grid(grid_blocks(n, kWmmaTile, "gemm_wmma"), unsigned((m + kWmmaTile - 1) / kWmmaTile));
  if (type == Element::BF16) {
    const auto kernel = &gemm_wmma_kernel<__nv_bfloat16, false>;
    FALCON_LAUNCH("gemm_wmma_bf16", kernel, grid, dim3(kWmmaThreads), stream, x, m, k, w, n, epilogue, y);
  } else {
    const auto kernel = &gemm_wmma_kernel<__half, true>;
    FALCON_LAUNCH("gemm_wmma_f16", kernel, grid, dim3(kWmmaThreads), stream, x, m, k, w, n, epilogue, y);
  }
}

void gemv(const float* x, int64_t m, int64_t k, const void* w, Element type, int64_t n, const GemmEpilogue& epilogue, float* y,
          cudaStream_t stream) {
  check_gemm("gemv", m, k, n);
  require_sizes(m <= kGemvMaxRows, "gemv", "at most kGemvMaxRows rows");
  require_sizes(type != Element::I8, "gemv", "int8 weights go through gemv_int8, with their scales");
  if (m == 0) return;
  const auto kernel = &gemv_kernel;
  FALCON_LAUNCH("gemv", kernel, dim3(grid_blocks(n, kGemvWarps, "gemv")), dim3(kGemvWarps * 32), stream, x, int(m), k, w, type, n,
                epilogue, y);
}

void gemv_int8(const float* x, int64_t m, int64_t k, const int8_t* q, const float* scales, int64_t n,
               const GemmEpilogue& epilogue, float* y, cudaStream_t stream) {
  check_gemm("gemv_int8", m, k, n);
  require_sizes(m <= kGemvMaxRows, "gemv_int8", "at most kGemvMaxRows rows");
  require_sizes(scales != nullptr, "gemv_int8", "int8 weights need their scales");
  if (m == 0) return;
  const auto kernel = &gemv_int8_kernel;
  FALCON_LAUNCH("gemv_int8", kernel, dim3(grid_blocks(n, kGemvWarps, "gemv_int8")), dim3(kGemvWarps * 32), stream, x, int(m), k, q,
                scales, n, epilogue, y);
}

}  // namespace FALCON_CUDA_NS
