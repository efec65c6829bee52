#include "kv_cache.h"

#include <new>

#include "error.h"

namespace falcon {

SequenceKv::SequenceKv(const ModelConfig& config, int64_t capacity)
    : valid(size_t(capacity), 0),
      position(size_t(capacity), 0),
      capacity_(capacity),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim()) {
  size_t floats = size_t(config.num_layers) * 2 * size_t(num_kv_heads_) * size_t(capacity_) * size_t(head_dim_);
  storage_.reset(new (std::nothrow) float[floats]);
  require(storage_ != nullptr, ErrorKind::Input,
          "out of memory allocating a KV cache of " + std::to_string(floats * sizeof(float)) + " bytes per sequence");
}

KvCache::KvCache(const ModelConfig& config, int64_t batch_size, int64_t max_length) : max_length_(max_length) {
  require(batch_size > 0, ErrorKind::Input, "cache batchSize must be a positive integer");
  require(max_length > 0, ErrorKind::Input, "cache maxLength must be a positive integer");
  bytes_per_sequence_ = size_t(config.num_layers) * 2 * size_t(config.num_kv_heads) * size_t(max_length) *
                        size_t(config.head_dim()) * sizeof(float);
  sequences_.reserve(size_t(batch_size));
  for (int64_t b = 0; b < batch_size; ++b) sequences_.push_back(std::make_unique<SequenceKv>(config, max_length));
}

size_t KvCache::byte_size() const { return bytes_per_sequence_ * sequences_.size(); }

}  // namespace falcon
