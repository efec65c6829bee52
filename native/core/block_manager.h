#pragma once
// KV block bookkeeping for the engine: which blocks are free, who references each, and the prefix
// cache that lets a new sequence reuse the blocks of an earlier one with the same leading tokens.
// Pure bookkeeping over block ids [0, N): the storage belongs to the StepRunner.
#include <cstdint>
#include <unordered_map>

#include "memory.h"
#include "step.h"

namespace falcon {

struct BlockCounts {
  int64_t total = 0;
  int64_t used = 0;    // referenced by at least one sequence
  int64_t free = 0;    // on the free list (never registered, or evicted)
  int64_t cached = 0;  // unreferenced but registered in the prefix cache (reusable, evictable)
};

class BlockManager {
 public:
  // `prefix_caching` false: blocks are never registered, so a released block is free at once.
  BlockManager(int64_t num_blocks, bool prefix_caching);

  bool prefix_caching() const { return prefix_caching_; }
  BlockCounts counts() const;
  // Blocks allocate() can still hand out: free ones and cached ones it would evict.
  int64_t allocatable() const { return int64_t(free_list_.size()) + lru_count_; }

  // A block with one reference, from the free list, else the least recently used cached block
  // (evicted: unregistered). -1 when every block is referenced. O(1).
  int32_t allocate();
  // Drops one reference; an unreferenced block goes to the LRU when registered, else to the free list. O(1).
  void release(int32_t block);

  // How many leading full blocks of `tokens` are registered, capped so that at most count − 1 tokens
  // are covered: the last token is always computed, so a sequence gets its logits, and so a shared
  // block is never written (every slot a sequence writes is in a block of its own: no copy-on-write).
  // `in_lru` (optional) counts those that are unreferenced now (acquiring them takes allocatable ones).
  int64_t match_prefix(const int32_t* tokens, int64_t count, int64_t* in_lru = nullptr) const;
  // The blocks match_prefix counts, each with one more reference, appended to `table`.
  void acquire_prefix(const int32_t* tokens, int64_t blocks, TrackedVector<int32_t>* table);

  // Registers `block`, full with the 16 `tokens` that follow the chain `parent` (the sequence's previous
  // block, or -1 for its first), under hash(parent's hash, tokens). A block whose parent is not
  // registered, or whose content another block already holds, stays unregistered. Returns whether it
  // is registered now.
  bool register_block(int32_t block, int32_t parent, const int32_t* tokens);

  int64_t num_blocks() const { return num_blocks_; }
  // Every block free and unregistered (the engine's recovery after a failure outside a step). Allocates nothing.
  void reset();

 private:
  static constexpr int32_t kNone = -1;

  struct Entry {
    int32_t references = 0;
    bool registered = false;
    uint64_t hash = 0;
    // Content identity: the parent block and the parent's registration serial at the time, so a chain
    // is matched exactly (a 64-bit hash collision can never join blocks of different prefixes).
    int32_t parent = kNone;
    uint64_t parent_serial = 0;
    uint64_t serial = 0;  // unique per registration
    int32_t tokens[kKvBlockTokens] = {};
    int32_t lru_prev = kNone, lru_next = kNone;
  };

  static uint64_t chain_hash(uint64_t parent_hash, const int32_t* tokens);
  // The registered block holding `tokens` after `parent` (kNone = start of a sequence), or kNone.
  int32_t find(int32_t parent, const int32_t* tokens) const;
  void unregister(int32_t block);
  void lru_push_back(int32_t block);
  void lru_remove(int32_t block);

  int64_t num_blocks_;
  bool prefix_caching_;
  TrackedVector<Entry> entries_;
  TrackedVector<int32_t> free_list_;
  int32_t lru_head_ = kNone, lru_tail_ = kNone;  // head = least recently used
  int64_t lru_count_ = 0;
  int64_t used_ = 0;
  uint64_t next_serial_ = 1;
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

}  // namespace falcon
