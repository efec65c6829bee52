#include "kv_cache.h"

#include <algorithm>
#include <cstring>

#include "error.h"

namespace falcon {

namespace {

// Written so that no positive length overflows.
int64_t blocks_for(int64_t max_length) { return max_length / kKvBlockTokens + (max_length % kKvBlockTokens != 0); }

// Sizes are checked before anything is allocated: the pool's members are built from these.
int64_t checked_blocks(const ModelConfig& config, int64_t batch_size, int64_t max_length) {
  require(batch_size > 0, ErrorKind::Input, "cache batchSize must be a positive integer");
  require(max_length > 0, ErrorKind::Input, "cache maxLength must be a positive integer");
  require_memory(cache_memory_bytes(config, batch_size, max_length), ErrorKind::Input,
                 "a KV cache of " + std::to_string(batch_size) + " sequences × " + std::to_string(max_length) + " tokens");
  return batch_size * blocks_for(max_length);
}

}  // namespace

ByteCount cache_memory_bytes(const ModelConfig& config, int64_t batch_size, int64_t max_length) {
  const ByteCount blocks = ByteCount(uint64_t(batch_size)) * uint64_t(blocks_for(max_length));
  return KvPool::memory_bytes(config, blocks.value()) + blocks * sizeof(int32_t) + ByteCount(uint64_t(batch_size)) * sizeof(int64_t) +
         sizeof(KvCache);
}

KvCache::KvCache(const ModelConfig& config, int64_t batch_size, int64_t max_length)
    : batch_size_(batch_size),
      max_length_(max_length),
      blocks_per_row_(blocks_for(max_length)),
      pool_(config, checked_blocks(config, batch_size, max_length)) {
  block_tables_.resize(size_t(pool_.num_blocks()));
  for (int64_t block = 0; block < pool_.num_blocks(); ++block) block_tables_[size_t(block)] = int32_t(block);
  written_.assign(size_t(batch_size), 0);
}

void KvCache::zero_unwritten_before(int64_t row, int64_t start) {
  int64_t& written = written_[size_t(row)];
  const int64_t d = pool_.head_dim();
  const size_t element = dtype_size(pool_.dtype());
  for (int64_t slot = written; slot < start; ++slot) {
    const int32_t block = block_table(row)[slot / kKvBlockTokens];
    const int64_t in_block = slot % kKvBlockTokens;
    for (int64_t layer = 0; layer < pool_.num_layers(); ++layer) {
      for (int64_t head = 0; head < pool_.num_kv_heads(); ++head) {
        // All-zero bytes are +0 in every KV dtype.
        auto* keys = static_cast<unsigned char*>(pool_.keys(block, layer, head));
        for (int64_t c = 0; c < d; ++c) std::memset(keys + size_t(c * kKvBlockTokens + in_block) * element, 0, element);
        std::memset(static_cast<unsigned char*>(pool_.values(block, layer, head)) + size_t(in_block * d) * element, 0, size_t(d) * element);
      }
    }
  }
  written = std::max(written, start);
}

void KvCache::mark_written(int64_t row, int64_t end) { written_[size_t(row)] = std::max(written_[size_t(row)], end); }

}  // namespace falcon
