#pragma once
// CUDA device code compiled as host C++: the emulation the kernels of native/cuda/kernels run through
// when there is no GPU (the addon, the tests, CI). Included only through ../cuda_compat.h.
//
// Model: a launch runs its grid's blocks one after another on the calling thread. The threads of a
// block are cooperative fibers (one stack each) that a scheduler switches between only where a CUDA
// thread may wait for others: __syncthreads() and the warp collectives (shuffles, votes, __syncwarp,
// wmma). So barriers and warp exchanges keep their meaning exactly, and misuse that would hang or be
// undefined on a GPU is reported as an error: a barrier or warp collective that not every required
// thread reaches (a thread exits, or waits at a different one), a shuffle reading an inactive lane,
// a mask naming lanes that do not exist, an index past a SharedArray's end. A kernel error stops the
// launch and surfaces as falcon::Error(State) naming the kernel, block and thread.
// Not modelled: timing, real data races (threads between two barriers run one after another, so a
// missing barrier between a write and another thread's read may go unnoticed), reads of shared memory
// no thread has written (it keeps the previous block's values, not garbage), dynamic shared memory,
// tensor-core rounding (wmma sums each product, exact in float32, in k order), fast-math intrinsics
// (__expf is expf).
//
// Everything is in falcon::cuda_emu; the CUDA spellings (dim3, threadIdx, __syncthreads, ...) are
// brought to the global scope by using-declarations and macros, so a binary may also link the real
// kernels (compiled by nvcc) without a clash.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../../core/dtype.h"
#include "../../core/error.h"

namespace falcon::cuda_emu {

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

constexpr int kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;

// Where the running emulated thread is.
struct ThreadPlace {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  int lane = 0;
};
const ThreadPlace& place();

// Throws from inside a kernel: the launch stops and reports `message` with the kernel's name and the
// thread's coordinates.
[[noreturn]] void kernel_error(const std::string& message);

void syncthreads();

// A warp collective: each lane of `mask` arrives with `payload`; the last one to arrive runs
// complete(payloads, mask) (payloads[lane] for each lane of mask), then all of them continue.
// `op` names the collective: lanes of one mask must all call the same one.
using WarpCompletion = void (*)(void* const* payloads, unsigned mask);
void warp_collective(const char* op, unsigned mask, void* payload, WarpCompletion complete);
// The lanes of the running thread's warp that exist and have not exited.
unsigned active_mask();

// Streams: emulated work runs when it is issued (which keeps every stream's order), unless the
// stream is capturing, when it is recorded into the capture instead (as CUDA graph capture does).
struct Stream {
  bool capturing = false;
  std::vector<std::function<void()>> captured;
};
// Runs `work` on `stream` (nullptr is the default stream) or records it.
void issue(Stream* stream, std::function<void()> work);

// Runs the grid: every block, every thread of it as a fiber calling body().
void run_grid(const char* name, dim3 grid, dim3 block, const std::function<void()>& body);

template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, Stream* stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "the kernel takes a different number of arguments");
  // Kernel parameters are copies, taken at launch, as CUDA takes them.
  auto work = [name, kernel, grid, block, params = std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)]() {
    run_grid(name, grid, block, [&] { std::apply(kernel, params); });
  };
  issue(stream, std::move(work));
}

// A __shared__ array whose indexing is checked: an index outside [0, N) is a kernel error.
template <typename T, int N>
struct SharedArray {
  T values[N];
  T& operator[](int i) {
    if (i < 0 || i >= N) kernel_error("shared memory index " + std::to_string(i) + " is outside [0, " + std::to_string(N) + ")");
    return values[i];
  }
  const T& operator[](int i) const { return const_cast<SharedArray&>(*this)[i]; }
  T* data() { return values; }
  static constexpr int size() { return N; }
};

// 16-bit float types, as the bits; arithmetic happens after widening to float.
struct half_emu {
  uint16_t bits;
};
struct bfloat16_emu {
  uint16_t bits;
};
inline float to_float(half_emu h) { return falcon::f16_to_f32(h.bits); }
inline float to_float(bfloat16_emu b) { return falcon::bf16_to_f32(b.bits); }
inline float to_float(float f) { return f; }

// Atomics: blocks and their threads run on one host thread, but a launch may run beside another
// host thread's, so the read-modify-writes are real atomics all the same.
template <typename T>
T atomic_update(T* address, const std::function<T(T)>& update) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "32- and 64-bit atomics only");
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* bits = reinterpret_cast<Bits*>(address);
  Bits expected = __atomic_load_n(bits, __ATOMIC_RELAXED);
  for (;;) {
    T old;
    std::memcpy(&old, &expected, sizeof old);
    const T next = update(old);
    Bits desired;
    std::memcpy(&desired, &next, sizeof desired);
    if (__atomic_compare_exchange_n(bits, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return old;
  }
}

template <typename T>
struct ShuffleExchange {
  T value;
  T result;
  int source;  // the lane whose value this lane receives
};

template <typename T>
void complete_shuffle(void* const* payloads, unsigned mask) {
  for (int lane = 0; lane < kWarpSize; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    auto* exchange = static_cast<ShuffleExchange<T>*>(payloads[lane]);
    if (!(mask >> exchange->source & 1u)) {
      kernel_error("lane " + std::to_string(lane) + " shuffles from lane " + std::to_string(exchange->source) +
                   ", which is not in the mask (its value is undefined)");
    }
    exchange->result = static_cast<ShuffleExchange<T>*>(payloads[exchange->source])->value;
  }
}

// Source lane within segments of `width` lanes (a power of two up to 32), as CUDA's shuffles define it;
// `own` when the source falls outside the segment (shfl_up / down / xor keep their own value then).
inline int shuffle_source(const char* op, int width, int lane, int wanted, bool clamp_to_own) {
  if (width <= 0 || width > kWarpSize || (width & (width - 1)) != 0) kernel_error(std::string(op) + " width must be a power of two up to 32");
  const int base = lane & ~(width - 1);
  if (!clamp_to_own) return base + (wanted & (width - 1));
  return wanted >= base && wanted < base + width ? wanted : lane;
}

template <typename T>
T shuffle(const char* op, unsigned mask, T var, int source) {
  static_assert(std::is_trivially_copyable_v<T>, "shuffles move plain values");
  ShuffleExchange<T> exchange{var, var, source};
  warp_collective(op, mask, &exchange, complete_shuffle<T>);
  return exchange.result;
}

struct VoteExchange {
  bool predicate;
  unsigned ballot;
};
void complete_vote(void* const* payloads, unsigned mask);
inline unsigned ballot(const char* op, unsigned mask, bool predicate) {
  VoteExchange exchange{predicate, 0};
  warp_collective(op, mask, &exchange, complete_vote);
  return exchange.ballot;
}

}  // namespace falcon::cuda_emu

// The CUDA spellings.
using falcon::cuda_emu::dim3;
using cudaStream_t = falcon::cuda_emu::Stream*;
using __half = falcon::cuda_emu::half_emu;
using __nv_bfloat16 = falcon::cuda_emu::bfloat16_emu;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One instance per host thread: the block running on it (blocks of a launch run one at a time).
#define __shared__ static thread_local
#define threadIdx (::falcon::cuda_emu::place().thread_idx)
#define blockIdx (::falcon::cuda_emu::place().block_idx)
#define blockDim (::falcon::cuda_emu::place().block_dim)
#define gridDim (::falcon::cuda_emu::place().grid_dim)
#define warpSize 32

inline void __syncthreads() { falcon::cuda_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { falcon::cuda_emu::warp_collective("__syncwarp", mask, nullptr, nullptr); }
inline unsigned __activemask() { return falcon::cuda_emu::active_mask(); }

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  const int lane = falcon::cuda_emu::place().lane;
  return falcon::cuda_emu::shuffle("__shfl_sync", mask, var, falcon::cuda_emu::shuffle_source("__shfl_sync", width, lane, src_lane, false));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  const int lane = falcon::cuda_emu::place().lane;
  return falcon::cuda_emu::shuffle("__shfl_xor_sync", mask, var,
                                   falcon::cuda_emu::shuffle_source("__shfl_xor_sync", width, lane, lane ^ lane_mask, true));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  const int lane = falcon::cuda_emu::place().lane;
  return falcon::cuda_emu::shuffle("__shfl_down_sync", mask, var,
                                   falcon::cuda_emu::shuffle_source("__shfl_down_sync", width, lane, lane + int(delta), true));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  const int lane = falcon::cuda_emu::place().lane;
  return falcon::cuda_emu::shuffle("__shfl_up_sync", mask, var,
                                   falcon::cuda_emu::shuffle_source("__shfl_up_sync", width, lane, lane - int(delta), true));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) { return falcon::cuda_emu::ballot("__ballot_sync", mask, predicate != 0); }
inline int __any_sync(unsigned mask, int predicate) { return falcon::cuda_emu::ballot("__any_sync", mask, predicate != 0) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
  return falcon::cuda_emu::ballot("__all_sync", mask, predicate != 0) == (mask & falcon::cuda_emu::active_mask());
}

template <typename T>
T atomicAdd(T* address, T value) {
  return falcon::cuda_emu::atomic_update<T>(address, [value](T old) { return T(old + value); });
}
template <typename T>
T atomicMax(T* address, T value) {
  return falcon::cuda_emu::atomic_update<T>(address, [value](T old) { return old < value ? value : old; });
}
template <typename T>
T atomicMin(T* address, T value) {
  return falcon::cuda_emu::atomic_update<T>(address, [value](T old) { return value < old ? value : old; });
}
template <typename T>
T atomicExch(T* address, T value) {
  return falcon::cuda_emu::atomic_update<T>(address, [value](T) { return value; });
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  return falcon::cuda_emu::atomic_update<T>(address, [compare, value](T old) { return old == compare ? value : old; });
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}
inline int __float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, sizeof i);
  return i;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
template <typename T>
T __ldg(const T* p) {
  return *p;
}
inline float __half2float(__half h) { return falcon::f16_to_f32(h.bits); }
inline __half __float2half_rn(float f) { return __half{falcon::f32_to_f16(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return falcon::bf16_to_f32(b.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{falcon::f32_to_bf16(f)}; }
