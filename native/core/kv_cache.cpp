#include "kv_cache.h"

#include <algorithm>

#include "backend.h"
#include "error.h"

namespace falcon {

namespace {

// Written so that no positive length overflows.
int64_t blocks_for(int64_t max_length) { return max_length / kKvBlockTokens + (max_length % kKvBlockTokens != 0); }

// Sizes are checked before anything is allocated: the pool's members are built from these.
int64_t checked_blocks(const ModelConfig& config, int64_t batch_size, int64_t max_length, const Backend* backend) {
  require(batch_size > 0, ErrorKind::Input, "cache batchSize must be a positive integer");
  require(max_length > 0, ErrorKind::Input, "cache maxLength must be a positive integer");
  // A device backend's pool checks its own memory; the host's share is checked here for the CPU.
  if (backend == nullptr || backend->kv_on_host()) {
    require_memory(cache_memory_bytes(config, batch_size, max_length), ErrorKind::Input,
                   "a KV cache of " + std::to_string(batch_size) + " sequences × " + std::to_string(max_length) + " tokens");
  }
  return batch_size * blocks_for(max_length);
}

}  // namespace

ByteCount cache_memory_bytes(const ModelConfig& config, int64_t batch_size, int64_t max_length) {
  const ByteCount blocks = ByteCount(uint64_t(batch_size)) * uint64_t(blocks_for(max_length));
  return KvPool::memory_bytes(config, blocks.value()) + blocks * sizeof(int32_t) + ByteCount(uint64_t(batch_size)) * sizeof(int64_t) +
         sizeof(KvCache);
}

KvCache::KvCache(const ModelConfig& config, int64_t batch_size, int64_t max_length, Backend* backend)
    : batch_size_(batch_size),
      max_length_(max_length),
      blocks_per_row_(blocks_for(max_length)),
      pool_(config, checked_blocks(config, batch_size, max_length, backend), DType::Float32, backend) {
  block_tables_.resize(size_t(pool_.num_blocks()));
  for (int64_t block = 0; block < pool_.num_blocks(); ++block) block_tables_[size_t(block)] = int32_t(block);
  written_.assign(size_t(batch_size), 0);
}

void KvCache::zero_unwritten_before(int64_t row, int64_t start) {
  int64_t& written = written_[size_t(row)];
  for (int64_t slot = written; slot < start; ++slot) pool_.zero_slot(block_table(row)[slot / kKvBlockTokens], slot % kKvBlockTokens);
  written = std::max(written, start);
}

void KvCache::mark_written(int64_t row, int64_t end) { written_[size_t(row)] = std::max(written_[size_t(row)], end); }

}  // namespace falcon
