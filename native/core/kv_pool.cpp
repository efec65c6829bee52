#include "kv_pool.h"

#include <cstdint>
#include <cstring>

#include "error.h"

namespace falcon {

namespace {

ByteCount kv_floats_per_block(const ModelConfig& config) {
  return ByteCount(uint64_t(config.num_layers)) * uint64_t(config.num_kv_heads) * 2 * uint64_t(kKvBlockTokens) *
         uint64_t(config.head_dim());
}

}  // namespace

ByteCount KvPool::block_bytes(const ModelConfig& config) {
  return kv_floats_per_block(config) * sizeof(float) + uint64_t(kKvBlockTokens) * (sizeof(int32_t) + sizeof(uint8_t));
}

ByteCount KvPool::memory_bytes(const ModelConfig& config, uint64_t num_blocks) {
  return ByteCount(streamed_allocation_bytes((block_bytes(config) * num_blocks).value())) + sizeof(KvPool);
}

KvPool::KvPool(const ModelConfig& config, int64_t num_blocks)
    : num_blocks_(num_blocks),
      num_layers_(config.num_layers),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim()),
      head_floats_(size_t(kKvBlockTokens * config.head_dim())) {
  // Block tables hold int32 ids.
  require(num_blocks > 0 && num_blocks <= INT32_MAX, ErrorKind::Input,
          "a KV pool needs between 1 and " + std::to_string(INT32_MAX) + " blocks, got " + std::to_string(num_blocks));
  require_memory(memory_bytes(config, uint64_t(num_blocks)), ErrorKind::Input, "a KV pool of " + std::to_string(num_blocks) + " blocks");
  const size_t bytes = size_t((block_bytes(config) * uint64_t(num_blocks)).value());
  storage_ = allocate_streamed(bytes);
  require(storage_ != nullptr, ErrorKind::Input, "out of memory allocating a KV pool of " + std::to_string(bytes) + " bytes");
  kv_ = static_cast<float*>(storage_.get());
  const size_t kv_floats = size_t(kv_floats_per_block(config).value()) * size_t(num_blocks);
  kv_bytes_ = kv_floats * sizeof(float);
  positions_ = reinterpret_cast<int32_t*>(kv_ + kv_floats);
  valid_ = reinterpret_cast<uint8_t*>(positions_ + size_t(num_blocks) * kKvBlockTokens);
  // Small next to the keys and values: a fresh pool's slots read as empty padding, never as garbage.
  std::memset(positions_, 0, size_t(num_blocks) * kKvBlockTokens * (sizeof(int32_t) + sizeof(uint8_t)));
}

bool KvPool::fits(const ModelConfig& config) const {
  return config.num_layers == num_layers_ && config.num_kv_heads == num_kv_heads_ && config.head_dim() == head_dim_;
}

}  // namespace falcon
