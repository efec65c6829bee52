#include "kv_pool.h"

#include <cstdint>
#include <cstring>

#include "error.h"

namespace falcon {

namespace {

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
  return ByteCount(streamed_allocation_bytes((block_bytes(config, dtype) * num_blocks).value())) + sizeof(KvPool);
}

KvPool::KvPool(const ModelConfig& config, int64_t num_blocks, DType dtype)
    : num_blocks_(num_blocks),
      num_layers_(config.num_layers),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim()),
      dtype_(dtype),
      head_bytes_(size_t(kKvBlockTokens * config.head_dim()) * kv_element_bytes(dtype)) {
  // Block tables hold int32 ids.
  require(num_blocks > 0 && num_blocks <= INT32_MAX, ErrorKind::Input,
          "a KV pool needs between 1 and " + std::to_string(INT32_MAX) + " blocks, got " + std::to_string(num_blocks));
  require_memory(memory_bytes(config, uint64_t(num_blocks), dtype), ErrorKind::Input,
                 "a KV pool of " + std::to_string(num_blocks) + " blocks");
  const size_t bytes = size_t((block_bytes(config, dtype) * uint64_t(num_blocks)).value());
  storage_ = allocate_streamed(bytes);
  require(storage_ != nullptr, ErrorKind::Input, "out of memory allocating a KV pool of " + std::to_string(bytes) + " bytes");
  kv_ = static_cast<unsigned char*>(storage_.get());
  kv_bytes_ = size_t(kv_elements_per_block(config).value()) * size_t(num_blocks) * dtype_size(dtype);
  // Every pool's key and value bytes are a multiple of 4 (kKvBlockTokens even), so positions stay aligned.
  positions_ = reinterpret_cast<int32_t*>(kv_ + kv_bytes_);
  valid_ = reinterpret_cast<uint8_t*>(positions_ + size_t(num_blocks) * kKvBlockTokens);
  // Small next to the keys and values: a fresh pool's slots read as empty padding, never as garbage.
  std::memset(positions_, 0, size_t(num_blocks) * kKvBlockTokens * (sizeof(int32_t) + sizeof(uint8_t)));
}

bool KvPool::fits(const ModelConfig& config) const {
  return config.num_layers == num_layers_ && config.num_kv_heads == num_kv_heads_ && config.head_dim() == head_dim_;
}

}  // namespace falcon
