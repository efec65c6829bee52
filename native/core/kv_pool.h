#pragma once
// Paged KV storage: a pool of fixed blocks of kKvBlockTokens token slots, for every layer and distinct
// KV head, in the layouts the CPU attention kernels read directly (cpu/kernels/kernels.h), so writing a
// token's keys is the only copy they ever get. Whoever plans the steps owns the block ids (the engine's
// block manager, or KvCache's fixed tables); the pool only stores.
// Keys and values are stored as float32, bfloat16 or float16 (the pool's dtype): a 16-bit pool holds
// twice the tokens in the same bytes. They are rounded to nearest even once, when written, and widened
// back to float32 (exactly) as attention loads them, so the attention arithmetic is float32 either way.
// float16 keeps 3 more significant bits than bfloat16 but only magnitudes up to 65504 (beyond, ±inf).
// The keys and values live where the pool's backend keeps them (KvStorage): host memory for the CPU,
// device memory for CUDA. Each slot's valid flag and position stay on the host, where steps are
// planned and checked; a device backend mirrors them itself.
#include <cstdint>
#include <memory>

#include "aligned_memory.h"
#include "dtype.h"
#include "memory.h"
#include "model_config.h"
#include "step.h"

namespace falcon {

class Backend;

// The bytes of one pool's keys and values, owned by the backend that made them.
class KvStorage {
 public:
  virtual ~KvStorage() = default;
  // The backend whose kernels read this memory (Backend::name()).
  virtual const char* backend() const = 0;
  // The first byte: a host pointer for the CPU, a device pointer for CUDA.
  virtual unsigned char* data() = 0;
  // Sets bytes [offset, offset + size) to zero, which is +0 in every KV dtype.
  virtual void zero(size_t offset, size_t size) = 0;
};

// Host memory for `bytes` of keys and values; throws Error(Input) when the machine does not have it.
std::unique_ptr<KvStorage> make_host_kv_storage(size_t bytes);

class KvPool {
 public:
  // Throws Error(Input) for a non-positive block count, one whose bytes the machine (or the device)
  // does not have, or a dtype other than float32, bfloat16 and float16.
  // Keys and values are allocated by `backend` (Backend::allocate_kv; null: host memory, the CPU's)
  // and left uninitialised (a slot is always written before it is read); every slot's valid flag and
  // position start at zero.
  KvPool(const ModelConfig& config, int64_t num_blocks, DType dtype = DType::Float32, Backend* backend = nullptr);
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_layers() const { return num_layers_; }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  // The element type of the keys and values.
  DType dtype() const { return dtype_; }
  // Whether the pool has the shape `config`'s model writes (layers, KV heads, head dimension).
  bool fits(const ModelConfig& config) const;
  // The bytes of its keys and values.
  size_t byte_size() const { return kv_bytes_; }
  // Where the keys and values live.
  KvStorage& storage() const { return *storage_; }
  // Zeroes the keys and values of one slot in every layer and KV head.
  void zero_slot(int64_t block, int64_t slot);

  // Elements of dtype(), keys as [head_dim][kKvBlockTokens]: component c of slot s at c · kKvBlockTokens + s
  // (kernels.h key blocks).
  void* keys(int64_t block, int64_t layer, int64_t kv_head) { return head_storage(0, block, layer, kv_head); }
  const void* keys(int64_t block, int64_t layer, int64_t kv_head) const { return head_storage(0, block, layer, kv_head); }
  // Values as [kKvBlockTokens][head_dim].
  void* values(int64_t block, int64_t layer, int64_t kv_head) { return head_storage(1, block, layer, kv_head); }
  const void* values(int64_t block, int64_t layer, int64_t kv_head) const { return head_storage(1, block, layer, kv_head); }
  // Per slot of a block: 1 when it holds a real token (0 = padding, never attended to), and the
  // token's position (ALiBi reads it for every cached key).
  uint8_t* valid(int64_t block) { return valid_.data() + block * kKvBlockTokens; }
  const uint8_t* valid(int64_t block) const { return valid_.data() + block * kKvBlockTokens; }
  int32_t* positions(int64_t block) { return positions_.data() + block * kKvBlockTokens; }
  const int32_t* positions(int64_t block) const { return positions_.data() + block * kKvBlockTokens; }

  // The bytes one block takes (every layer, distinct KV heads, keys, values, valid flags, positions),
  // keys and values stored as `dtype`. Throws Error(Input) for a dtype a pool cannot store.
  static ByteCount block_bytes(const ModelConfig& config, DType dtype = DType::Float32);
  // The host bytes a pool of `num_blocks` allocates with its keys and values on the host (with the
  // allocation's rounding), overflow-checked.
  static ByteCount memory_bytes(const ModelConfig& config, uint64_t num_blocks, DType dtype = DType::Float32);

 private:
  // Keys (which = 0) or values (1) of one block, layer and KV head.
  unsigned char* head_storage(int64_t which, int64_t block, int64_t layer, int64_t kv_head) const {
    return kv_ + ((size_t(which * num_layers_ + layer) * size_t(num_kv_heads_) + size_t(kv_head)) * size_t(num_blocks_) + size_t(block)) *
                     head_bytes_;
  }

  int64_t num_blocks_;
  int64_t num_layers_;
  int64_t num_kv_heads_;
  int64_t head_dim_;
  DType dtype_;
  size_t head_bytes_;  // kKvBlockTokens · head_dim elements: one head's keys (or values) in one block
  size_t kv_bytes_;
  std::unique_ptr<KvStorage> storage_;
  // storage_ holds [keys | values][layers][kv_heads][num_blocks] of head_bytes_ each. A layer's head's
  // blocks sit side by side, not a block's layers and heads: a sequence whose block ids run
  // consecutively (a keras-hub cache's rows, fresh engine allocations) then has its keys in one stream
  // the hardware prefetcher follows, instead of one 4 KiB page per block (that way decoding over 512
  // cached tokens took about 5 % more CPU time per token).
  unsigned char* kv_ = nullptr;
  TrackedVector<int32_t> positions_;  // [num_blocks][kKvBlockTokens]
  TrackedVector<uint8_t> valid_;
};

}  // namespace falcon
