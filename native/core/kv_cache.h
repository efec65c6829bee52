#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "kv_pool.h"
#include "memory.h"
#include "model_config.h"

namespace falcon {

// Scratch memory a backend keeps between calls so decoding allocates nothing per token.
class BackendWorkspace {
 public:
  virtual ~BackendWorkspace() = default;
};

// The bytes a KvCache of this shape allocates, overflow-checked.
ByteCount cache_memory_bytes(const ModelConfig& config, int64_t batch_size, int64_t max_length);

// keras-hub's cache (createCache / callWithCache): `batch_size` sequences of up to `max_length` tokens,
// on a KvPool of batch_size · ceil(max_length / kKvBlockTokens) blocks where row b owns a fixed run of
// consecutive blocks. Used by one call at a time.
class KvCache {
 public:
  // Throws Error(Input) for a non-positive size, or one whose bytes the machine (or the device) does
  // not have. The keys and values live where `backend` keeps them (null: host memory, the CPU's).
  KvCache(const ModelConfig& config, int64_t batch_size, int64_t max_length, Backend* backend = nullptr);

  int64_t batch_size() const { return batch_size_; }
  int64_t max_length() const { return max_length_; }
  int64_t blocks_per_row() const { return blocks_per_row_; }
  KvPool& pool() { return pool_; }
  const KvPool& pool() const { return pool_; }
  // Row b's block table: blocks_per_row() ids.
  const int32_t* block_table(int64_t row) const { return block_tables_.data() + row * blocks_per_row_; }
  size_t byte_size() const { return pool_.byte_size(); }

  // A call may start a row past slots no call has written (cacheUpdateIndex is the caller's): those
  // slots read as padding, and their keys and values are zeroed first, because a masked slot still
  // enters the value sum with probability 0, and 0 · NaN of uninitialised memory would be NaN.
  void zero_unwritten_before(int64_t row, int64_t start);
  // Slots [0, end) of `row` have been written.
  void mark_written(int64_t row, int64_t end);

  // Marks the cache in use; false if another call holds it.
  bool try_acquire() { return !busy_.exchange(true); }
  void release() { busy_.store(false); }

  std::unique_ptr<BackendWorkspace> workspace;

 private:
  int64_t batch_size_;
  int64_t max_length_;
  int64_t blocks_per_row_;
  KvPool pool_;
  TrackedVector<int32_t> block_tables_;  // [batch_size][blocks_per_row]
  TrackedVector<int64_t> written_;       // per row: slots [0, written) hold keys and values
  std::atomic<bool> busy_{false};
};

}  // namespace falcon
