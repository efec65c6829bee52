#include "kv_pool.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "backend.h"
#include "error.h"

namespace falcon {

namespace {

class HostKvStorage final : public KvStorage {
 public:
  explicit HostKvStorage(std::unique_ptr<void, StreamedDeleter> memory) : memory_(std::move(memory)) {}
  const char* backend() const override { return "cpu"; }
  unsigned char* data() override { return static_cast<unsigned char*>(memory_.get()); }
  void zero(size_t offset, size_t size) override { std::memset(data() + offset, 0, size); }

 private:
  std::unique_ptr<void, StreamedDeleter> memory_;
};

ByteCount kv_elements_per_block(const ModelConfig& config) {
  return ByteCount(uint64_t(config.num_layers)) * uint64_t(config.num_kv_heads) * 2 * uint64_t(kKvBlockTokens) *
         uint64_t(config.head_dim());
}

// The bytes of one stored key or value component; refuses what a pool cannot store.
size_t kv_element_bytes(DType dtype) {
  require(dtype == DType::Float32 || dtype == DType::BFloat16 || dtype == DType::Float16, ErrorKind::Input,
          std::string("a KV pool stores float32, bfloat16 or float16, not ") + dtype_name(dtype));
  return dtype_size(dtype);
}

}  // namespace

ByteCount KvPool::block_bytes(const ModelConfig& config, DType dtype) {
  return kv_elements_per_block(config) * kv_element_bytes(dtype) + uint64_t(kKvBlockTokens) * (sizeof(int32_t) + sizeof(uint8_t));
}

ByteCount KvPool::memory_bytes(const ModelConfig& config, uint64_t num_blocks, DType dtype) {
  const ByteCount kv = kv_elements_per_block(config) * kv_element_bytes(dtype) * num_blocks;
  const ByteCount slots = ByteCount(num_blocks) * uint64_t(kKvBlockTokens) * (sizeof(int32_t) + sizeof(uint8_t));
  return ByteCount(streamed_allocation_bytes(kv.value())) + slots + sizeof(KvPool);
}

std::unique_ptr<KvStorage> make_host_kv_storage(size_t bytes) {
  auto memory = allocate_streamed(bytes);
  require(memory != nullptr, ErrorKind::Input, "out of memory allocating a KV pool of " + std::to_string(bytes) + " bytes");
  return std::make_unique<HostKvStorage>(std::move(memory));
}

KvPool::KvPool(const ModelConfig& config, int64_t num_blocks, DType dtype, Backend* backend)
    : num_blocks_(num_blocks),
      num_layers_(config.num_layers),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim()),
      dtype_(dtype),
      head_bytes_(size_t(kKvBlockTokens * config.head_dim()) * kv_element_bytes(dtype)) {
  // Block tables hold int32 ids.
  require(num_blocks > 0 && num_blocks <= INT32_MAX, ErrorKind::Input,
          "a KV pool needs between 1 and " + std::to_string(INT32_MAX) + " blocks, got " + std::to_string(num_blocks));
  const ByteCount kv_bytes = kv_elements_per_block(config) * uint64_t(num_blocks) * dtype_size(dtype);
  const bool on_host = backend == nullptr || backend->kv_on_host();
  if (on_host) {
    require_memory(memory_bytes(config, uint64_t(num_blocks), dtype), ErrorKind::Input,
                   "a KV pool of " + std::to_string(num_blocks) + " blocks");
  } else {
    // The keys and values are the backend's to place (and to refuse); only the slots' flags and positions are the host's.
    require_memory(ByteCount(uint64_t(num_blocks)) * uint64_t(kKvBlockTokens) * (sizeof(int32_t) + sizeof(uint8_t)), ErrorKind::Input,
                   "the slot table of a KV pool of " + std::to_string(num_blocks) + " blocks");
  }
  require(kv_bytes.value() <= SIZE_MAX, ErrorKind::Input, "a KV pool of " + std::to_string(num_blocks) + " blocks is too large");
  kv_bytes_ = size_t(kv_bytes.value());
  storage_ = backend == nullptr ? make_host_kv_storage(kv_bytes_) : backend->allocate_kv(kv_bytes_, num_blocks);
  require(std::string(storage_->backend()) == (backend == nullptr ? "cpu" : backend->name()), ErrorKind::State,
          "a backend allocated KV storage for another backend");
  kv_ = storage_->data();
  // A fresh pool's slots read as empty padding, never as garbage.
  positions_.assign(size_t(num_blocks) * kKvBlockTokens, 0);
  valid_.assign(size_t(num_blocks) * kKvBlockTokens, 0);
}

void KvPool::zero_slot(int64_t block, int64_t slot) {
  const size_t element = dtype_size(dtype_);
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    for (int64_t head = 0; head < num_kv_heads_; ++head) {
      const size_t key_offset = size_t(static_cast<unsigned char*>(keys(block, layer, head)) - kv_);
      for (int64_t c = 0; c < head_dim_; ++c) storage_->zero(key_offset + size_t(c * kKvBlockTokens + slot) * element, element);
      const size_t value_offset = size_t(static_cast<unsigned char*>(values(block, layer, head)) - kv_);
      storage_->zero(value_offset + size_t(slot * head_dim_) * element, size_t(head_dim_) * element);
    }
  }
}

bool KvPool::fits(const ModelConfig& config) const {
  return config.num_layers == num_layers_ && config.num_kv_heads == num_kv_heads_ && config.head_dim() == head_dim_;
}

}  // namespace falcon
