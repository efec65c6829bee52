#include "probes.h"

#include "common.cuh"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kMaxProbeThreads = 256;

__global__ void barrier_exchange_kernel(const int32_t* values, int32_t* out) {
  __shared__ SharedArray<int32_t, kMaxProbeThreads> slots;
  const int t = int(threadIdx.x), n = int(blockDim.x);
  const int64_t base = int64_t(blockIdx.x) * n;
  slots[t] = values[base + t] * 2;
  __syncthreads();
  out[base + t] = slots[(t + 1) % n];
}

__global__ void warp_ops_kernel(const int32_t* values, int32_t* out) {
  const int t = int(threadIdx.x), n = int(blockDim.x), lane = t % 32;
  const int32_t v = values[t];
  out[0 * n + t] = __shfl_sync(kFullMask, v, (lane * 7 + 3) % 32);
  out[1 * n + t] = __shfl_xor_sync(kFullMask, v, 5);
  out[2 * n + t] = __shfl_down_sync(kFullMask, v, 3);
  out[3 * n + t] = __shfl_up_sync(kFullMask, v, 2);
  out[4 * n + t] = __shfl_sync(kFullMask, v, lane + 1, 8);
  out[5 * n + t] = int32_t(__ballot_sync(kFullMask, v % 2 != 0));
  out[6 * n + t] = __any_sync(kFullMask, v > 1000);
  out[7 * n + t] = __all_sync(kFullMask, v >= 0);
  out[8 * n + t] = warp_sum(v);
}

__global__ void atomics_kernel(int32_t* count, float* sum) {
  atomicAdd(count, 1);
  atomicAdd(sum, 0.5f);
}

template <typename T>
__global__ void wmma_tile_kernel(const uint16_t* a, const uint16_t* b, const float* c, float* d) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_fragment;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_fragment;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> accumulator;
  wmma::load_matrix_sync(a_fragment, reinterpret_cast<const T*>(a), 16);
  wmma::load_matrix_sync(b_fragment, reinterpret_cast<const T*>(b), 16);
  wmma::load_matrix_sync(accumulator, c, 16, wmma::mem_row_major);
  wmma::mma_sync(accumulator, a_fragment, b_fragment, accumulator);
  wmma::store_matrix_sync(d, accumulator, 16, wmma::mem_row_major);
}

__global__ void add_one_kernel(float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}

__global__ void shared_index_kernel(int index, float* sink) {
  __shared__ SharedArray<float, 32> slots;
  slots[int(threadIdx.x)] = float(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) *sink = slots[index];
}

__global__ void divergent_barrier_kernel() {
  if (threadIdx.x < 32) __syncthreads();
}

__global__ void shuffle_outside_mask_kernel(int32_t* sink) {
  const int lane = int(threadIdx.x) % 32;
  if (lane < 16) sink[lane] = __shfl_sync(0x0000ffffu, lane, 20);
}

__global__ void shuffle_after_exit_kernel(int32_t* sink) {
  const int lane = int(threadIdx.x) % 32;
  if (lane >= 16) return;
  sink[lane] = __shfl_xor_sync(kFullMask, lane, 1);
}

__global__ void mixed_collectives_kernel(int32_t* sink) {
  const int lane = int(threadIdx.x) % 32;
  if (lane < 16) {
    sink[lane] = __shfl_xor_sync(kFullMask, lane, 1);
  } else {
    sink[lane] = int32_t(__ballot_sync(kFullMask, lane % 2));
  }
}

__global__ void warp_barrier_deadlock_kernel() {
  if (threadIdx.x < 16) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

}  // namespace

void probe_barrier_exchange(const int32_t* values, int64_t blocks, int threads, int32_t* out, cudaStream_t stream) {
  require_sizes(blocks > 0 && threads > 0 && threads <= kMaxProbeThreads, "probe_barrier_exchange", "1 to 256 threads");
  const auto kernel = &barrier_exchange_kernel;
  FALCON_LAUNCH("probe_barrier_exchange", kernel, dim3(unsigned(blocks)), dim3(unsigned(threads)), stream, values, out);
}

void probe_warp_ops(const int32_t* values, int threads, int32_t* out, cudaStream_t stream) {
  require_sizes(threads > 0 && threads % 32 == 0 && threads <= 1024, "probe_warp_ops", "whole warps, at most 1024 threads");
  const auto kernel = &warp_ops_kernel;
  FALCON_LAUNCH("probe_warp_ops", kernel, dim3(1), dim3(unsigned(threads)), stream, values, out);
}

void probe_atomics(int blocks, int threads, int32_t* count, float* sum, cudaStream_t stream) {
  require_sizes(blocks > 0 && threads > 0 && threads <= 1024, "probe_atomics", "1 to 1024 threads");
  const auto kernel = &atomics_kernel;
  FALCON_LAUNCH("probe_atomics", kernel, dim3(unsigned(blocks)), dim3(unsigned(threads)), stream, count, sum);
}

void probe_wmma_tile(const uint16_t* a, const uint16_t* b, const float* c, bool bf16, float* d, cudaStream_t stream) {
  if (bf16) {
    const auto kernel = &wmma_tile_kernel<__nv_bfloat16>;
    FALCON_LAUNCH("probe_wmma_tile_bf16", kernel, dim3(1), dim3(32), stream, a, b, c, d);
  } else {
    const auto kernel = &wmma_tile_kernel<__half>;
    FALCON_LAUNCH("probe_wmma_tile_f16", kernel, dim3(1), dim3(32), stream, a, b, c, d);
  }
}

void probe_add_one(float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const auto kernel = &add_one_kernel;
  FALCON_LAUNCH("probe_add_one", kernel, dim3(grid_blocks(n, 128, "probe_add_one")), dim3(128), stream, x, n);
}

void probe_shared_index(int index, cudaStream_t stream) {
  // The sink is never read: on the emulation the kernel fails first; on a GPU nobody runs it.
  static float sink;
  const auto kernel = &shared_index_kernel;
  FALCON_LAUNCH("probe_shared_index", kernel, dim3(1), dim3(32), stream, index, &sink);
}

void probe_divergent_barrier(cudaStream_t stream) {
  const auto kernel = &divergent_barrier_kernel;
  FALCON_LAUNCH("probe_divergent_barrier", kernel, dim3(1), dim3(64), stream);
}

void probe_shuffle_outside_mask(cudaStream_t stream) {
  static int32_t sink[32];
  const auto kernel = &shuffle_outside_mask_kernel;
  FALCON_LAUNCH("probe_shuffle_outside_mask", kernel, dim3(1), dim3(32), stream, sink);
}

void probe_shuffle_after_exit(cudaStream_t stream) {
  static int32_t sink[32];
  const auto kernel = &shuffle_after_exit_kernel;
  FALCON_LAUNCH("probe_shuffle_after_exit", kernel, dim3(1), dim3(32), stream, sink);
}

void probe_mixed_collectives(cudaStream_t stream) {
  static int32_t sink[32];
  const auto kernel = &mixed_collectives_kernel;
  FALCON_LAUNCH("probe_mixed_collectives", kernel, dim3(1), dim3(32), stream, sink);
}

void probe_warp_barrier_deadlock(cudaStream_t stream) {
  const auto kernel = &warp_barrier_deadlock_kernel;
  FALCON_LAUNCH("probe_warp_barrier_deadlock", kernel, dim3(1), dim3(64), stream);
}

}  // namespace FALCON_CUDA_NS
