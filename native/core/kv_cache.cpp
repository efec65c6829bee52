#include "kv_cache.h"

#include "error.h"

namespace falcon {

namespace {

ByteCount sequence_storage_bytes(const ModelConfig& config, int64_t capacity) {
  return ByteCount(uint64_t(config.num_layers)) * 2 * uint64_t(config.num_kv_heads) * uint64_t(capacity) *
         uint64_t(config.head_dim()) * sizeof(float);
}

}  // namespace

ByteCount cache_memory_bytes(const ModelConfig& config, int64_t batch_size, int64_t max_length) {
  const ByteCount per_slot = sizeof(uint8_t) + sizeof(int32_t);
  const ByteCount per_sequence = sequence_storage_bytes(config, max_length) + per_slot * uint64_t(max_length) + sizeof(SequenceKv);
  return per_sequence * uint64_t(batch_size);
}

SequenceKv::SequenceKv(const ModelConfig& config, int64_t capacity)
    : valid(size_t(capacity), 0),
      position(size_t(capacity), 0),
      capacity_(capacity),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim()),
      storage_(allocate_streamed(size_t(sequence_storage_bytes(config, capacity).value()))) {
  require(storage_ != nullptr, ErrorKind::Input,
          "out of memory allocating a KV cache of " + std::to_string(sequence_storage_bytes(config, capacity).value()) +
              " bytes per sequence");
}

KvCache::KvCache(const ModelConfig& config, int64_t batch_size, int64_t max_length) : max_length_(max_length) {
  require(batch_size > 0, ErrorKind::Input, "cache batchSize must be a positive integer");
  require(max_length > 0, ErrorKind::Input, "cache maxLength must be a positive integer");
  require_memory(cache_memory_bytes(config, batch_size, max_length), ErrorKind::Input,
                 "a KV cache of " + std::to_string(batch_size) + " sequences × " + std::to_string(max_length) + " tokens");
  bytes_per_sequence_ = size_t(sequence_storage_bytes(config, max_length).value());
  sequences_.reserve(size_t(batch_size));
  for (int64_t b = 0; b < batch_size; ++b) sequences_.push_back(std::make_unique<SequenceKv>(config, max_length));
}

size_t KvCache::byte_size() const { return bytes_per_sequence_ * sequences_.size(); }

}  // namespace falcon
