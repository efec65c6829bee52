// Writing a step's new keys and values into the paged KV pool (the CPU's write_cache, without the
// rotary rotation, which apply_rotary has already done on the device).
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kThreads = 128;

// Rounded once to nearest even, as falcon::store_from_f32 does.
template <Element E>
__device__ __forceinline__ void store(void* base, int64_t i, float value) {
  if (E == Element::F32) {
    static_cast<float*>(base)[i] = value;
  } else if (E == Element::BF16) {
    static_cast<uint16_t*>(base)[i] = float_to_bf16_bits(value);
  } else {
    static_cast<uint16_t*>(base)[i] = float_to_half_bits(value);
  }
}

struct KvWriteArgs {
  const float* qkv;
  int64_t qkv_stride, heads, kv_heads, head_dim;
  const int32_t* row_block;
  const int32_t* row_slot;
  const uint8_t* row_valid;
  const int32_t* row_position;
  PagedKvWrite kv;
};

// One block per (row, KV head): its key and value heads into their pool slot; the row's first KV
// head's block also writes the slot's valid flag and position.
template <Element E>
__global__ void __launch_bounds__(kThreads) write_kv_kernel(KvWriteArgs a) {
  const int64_t row = blockIdx.x, kv_head = blockIdx.y, d = a.head_dim;
  const int64_t block = a.row_block[row], slot = a.row_slot[row];
  const float* key = a.qkv + row * a.qkv_stride + (a.heads + kv_head) * d;
  const float* value = a.qkv + row * a.qkv_stride + (a.heads + a.kv_heads + kv_head) * d;
  const int64_t start = kv_head * a.kv.head_stride + block * a.kv.block_stride;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    store<E>(a.kv.keys, start + c * kKvTokens + slot, key[c]);  // keys [head_dim][kKvTokens]
    store<E>(a.kv.values, start + slot * d + c, value[c]);      // values [kKvTokens][head_dim]
  }
  if (kv_head == 0 && threadIdx.x == 0) {
    a.kv.valid[block * kKvTokens + slot] = a.row_valid[row];
    a.kv.positions[block * kKvTokens + slot] = a.row_position[row];
  }
}

}  // namespace

void write_kv(const float* qkv, int64_t rows, int64_t qkv_stride, int64_t heads, int64_t kv_heads, int64_t head_dim,
              const int32_t* row_block, const int32_t* row_slot, const uint8_t* row_valid, const int32_t* row_position,
              const PagedKvWrite& kv, cudaStream_t stream) {
  require_sizes(rows >= 0 && heads > 0 && heads <= 65535 && kv_heads > 0 && heads % kv_heads == 0, "write_kv",
                "rows must be non-negative, heads (at most 65535) a positive multiple of kv_heads");
  require_sizes(head_dim > 0 && head_dim <= 65536 && (heads + 2 * kv_heads) * head_dim <= qkv_stride, "write_kv",
                "head_dim must be positive and the key and value heads inside the qkv rows");
  require_sizes(kv.head_stride >= 0 && kv.block_stride >= 0, "write_kv", "the pool strides must be non-negative");
  require_sizes(kv.type == Element::F32 || kv.type == Element::BF16 || kv.type == Element::F16, "write_kv",
                "the pool holds float32, bfloat16 or float16");
  if (rows == 0) return;
  const KvWriteArgs args{qkv, qkv_stride, heads, kv_heads, head_dim, row_block, row_slot, row_valid, row_position, kv};
  const dim3 grid(grid_blocks(rows, 1, "write_kv"), unsigned(kv_heads));
  if (kv.type == Element::F32) {
    const auto kernel = &write_kv_kernel<Element::F32>;
    FALCON_LAUNCH("write_kv_f32", kernel, grid, dim3(kThreads), stream, args);
  } else if (kv.type == Element::BF16) {
    const auto kernel = &write_kv_kernel<Element::BF16>;
    FALCON_LAUNCH("write_kv_bf16", kernel, grid, dim3(kThreads), stream, args);
  } else {
    const auto kernel = &write_kv_kernel<Element::F16>;
    FALCON_LAUNCH("write_kv_f16", kernel, grid, dim3(kThreads), stream, args);
  }
}

}  // namespace FALCON_CUDA_NS
