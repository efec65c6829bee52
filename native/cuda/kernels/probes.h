#pragma once
// Kernels that exercise the emulation itself (test/cuda-emulation.test.ts): barrier, warp and
// atomic semantics, wmma, and the misuse the emulation must report. Test-only; compiled by nvcc
// too, so the real build proves they are valid CUDA.
#include <cstdint>

#include "../cuda_compat.h"

namespace FALCON_CUDA_NS {

// Each block of `threads` writes its values to shared memory, syncs, and reads its neighbour's:
// out[b·threads + t] = values[b·threads + (t + 1) % threads] · 2.
void probe_barrier_exchange(const int32_t* values, int64_t blocks, int threads, int32_t* out, cudaStream_t stream);
// Per thread t of one block, with lane = t % 32 and v = values[t], out[r · threads + t] for r =
// 0: __shfl_sync(v, (lane · 7 + 3) % 32)       1: __shfl_xor_sync(v, 5)    2: __shfl_down_sync(v, 3)
// 3: __shfl_up_sync(v, 2)                      4: __shfl_sync(v, lane + 1, width 8)
// 5: __ballot_sync(v odd)  6: __any_sync(v > 1000)  7: __all_sync(v ≥ 0)  8: warp sum by shfl_xor
// `threads` a multiple of 32.
void probe_warp_ops(const int32_t* values, int threads, int32_t* out, cudaStream_t stream);
// Every thread of the grid adds 1 to *count and 0.5 to *sum.
void probe_atomics(int blocks, int threads, int32_t* count, float* sum, cudaStream_t stream);
// One warp: d = a · b + c for 16×16 tiles (a, b of `bf16` ? bfloat16 : float16 bits, row-major; c, d float).
void probe_wmma_tile(const uint16_t* a, const uint16_t* b, const float* c, bool bf16, float* d, cudaStream_t stream);
// x[i] += 1 for i < n.
void probe_add_one(float* x, int64_t n, cudaStream_t stream);

// Misuse, each of which the emulation reports as an error:
// thread 0 indexes a 32-element shared array at `index`;
void probe_shared_index(int index, cudaStream_t stream);
// half the block waits at __syncthreads() and the other half exits;
void probe_divergent_barrier(cudaStream_t stream);
// lanes 0–15 shuffle among themselves but read lane 20;
void probe_shuffle_outside_mask(cudaStream_t stream);
// lanes 16–31 exit, lanes 0–15 shuffle with the full mask;
void probe_shuffle_after_exit(cudaStream_t stream);
// lanes 0–15 shuffle and lanes 16–31 vote, each with the full mask (divergent warp collectives);
void probe_mixed_collectives(cudaStream_t stream);
// in a block of two warps, lanes 0–15 of warp 0 wait in __syncwarp() for lanes 16–31, which wait at
// __syncthreads() for them (a deadlock).
void probe_warp_barrier_deadlock(cudaStream_t stream);

}  // namespace FALCON_CUDA_NS
