#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "aligned_memory.h"
#include "memory.h"
#include "model_config.h"

namespace falcon {

// Scratch memory a backend keeps between calls so decoding allocates nothing per token.
class BackendWorkspace {
 public:
  virtual ~BackendWorkspace() = default;
};

// The keys and values of one sequence for every layer, holding only the distinct KV heads.
// Keys are stored after projection, bias and rotary embedding; each slot also records whether it
// holds a real token and the position the token was encoded at (ALiBi reads it for every cached key).
class SequenceKv {
 public:
  SequenceKv(const ModelConfig& config, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  float* keys(int64_t layer, int64_t kv_head) { return block(layer, 0, kv_head); }
  float* values(int64_t layer, int64_t kv_head) { return block(layer, 1, kv_head); }
  const float* keys(int64_t layer, int64_t kv_head) const { return const_cast<SequenceKv*>(this)->block(layer, 0, kv_head); }
  const float* values(int64_t layer, int64_t kv_head) const { return const_cast<SequenceKv*>(this)->block(layer, 1, kv_head); }

  TrackedVector<uint8_t> valid;     // [capacity] 1 = slot holds a real token
  TrackedVector<int32_t> position;  // [capacity] the token's position (0 for padding)

 private:
  float* block(int64_t layer, int64_t which, int64_t kv_head) {
    return static_cast<float*>(storage_.get()) + ((size_t(layer) * 2 + size_t(which)) * size_t(num_kv_heads_) + size_t(kv_head)) *
                                size_t(capacity_) * size_t(head_dim_);
  }

  int64_t capacity_;
  int64_t num_kv_heads_;
  int64_t head_dim_;
  std::unique_ptr<void, StreamedDeleter> storage_;  // [layers][key|value][kv_heads][capacity][head_dim], left uninitialised
};

// The bytes a KvCache of this shape allocates, overflow-checked.
ByteCount cache_memory_bytes(const ModelConfig& config, int64_t batch_size, int64_t max_length);

// A batch of per-sequence caches, used by one call at a time.
class KvCache {
 public:
  // Throws Error(Input) for a non-positive size, or one whose bytes the machine does not have.
  KvCache(const ModelConfig& config, int64_t batch_size, int64_t max_length);

  int64_t batch_size() const { return int64_t(sequences_.size()); }
  int64_t max_length() const { return max_length_; }
  SequenceKv& sequence(int64_t index) { return *sequences_[size_t(index)]; }
  size_t byte_size() const;

  // Marks the cache in use; false if another call holds it.
  bool try_acquire() { return !busy_.exchange(true); }
  void release() { busy_.store(false); }

  std::unique_ptr<BackendWorkspace> workspace;

 private:
  int64_t max_length_;
  size_t bytes_per_sequence_;
  std::vector<std::unique_ptr<SequenceKv>> sequences_;
  std::atomic<bool> busy_{false};
};

}  // namespace falcon
