#include "block_manager.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace falcon {

BlockManager::BlockManager(int64_t num_blocks, bool prefix_caching)
    : num_blocks_(num_blocks), prefix_caching_(prefix_caching) {
  require(num_blocks > 0 && num_blocks <= INT32_MAX, ErrorKind::Input,
          "the KV pool needs between 1 and 2^31 − 1 blocks, got " + std::to_string(num_blocks));
  require_memory(ByteCount(uint64_t(num_blocks)) * (sizeof(Entry) + sizeof(int32_t)), ErrorKind::Input,
                 "the KV block table of " + std::to_string(num_blocks) + " blocks");
  entries_.resize(size_t(num_blocks));
  free_list_.reserve(size_t(num_blocks));
  by_hash_.reserve(size_t(std::min<int64_t>(num_blocks, 1 << 16)));
  reset();
}

void BlockManager::reset() {
  std::fill(entries_.begin(), entries_.end(), Entry());
  free_list_.clear();
  // Handed out lowest id first.
  for (int64_t block = num_blocks_ - 1; block >= 0; --block) free_list_.push_back(int32_t(block));
  by_hash_.clear();
  lru_head_ = lru_tail_ = kNone;
  lru_count_ = 0;
  used_ = 0;
}

BlockCounts BlockManager::counts() const {
  return {num_blocks_, used_, int64_t(free_list_.size()), lru_count_};
}

int32_t BlockManager::allocate() {
  int32_t block = kNone;
  if (!free_list_.empty()) {
    block = free_list_.back();
    free_list_.pop_back();
  } else if (lru_head_ != kNone) {
    block = lru_head_;
    lru_remove(block);
    unregister(block);
  } else {
    return kNone;
  }
  entries_[size_t(block)].references = 1;
  ++used_;
  return block;
}

void BlockManager::release(int32_t block) {
  Entry& entry = entries_[size_t(block)];
  if (--entry.references > 0) return;
  --used_;
  if (entry.registered) lru_push_back(block);
  else free_list_.push_back(block);
}

uint64_t BlockManager::chain_hash(uint64_t parent_hash, const int32_t* tokens) {
  // FNV-1a over the parent's hash and the block's token ids, then a final mix.
  uint64_t hash = 0xcbf29ce484222325ull ^ parent_hash;
  for (int64_t i = 0; i < kKvBlockTokens; ++i) {
    uint32_t token = uint32_t(tokens[i]);
    for (int byte = 0; byte < 4; ++byte) {
      hash ^= (token >> (8 * byte)) & 0xff;
      hash *= 0x100000001b3ull;
    }
  }
  hash ^= hash >> 33;
  hash *= 0xff51afd7ed558ccdull;
  hash ^= hash >> 33;
  return hash;
}

int32_t BlockManager::find(int32_t parent, const int32_t* tokens) const {
  const uint64_t parent_hash = parent == kNone ? 0 : entries_[size_t(parent)].hash;
  auto found = by_hash_.find(chain_hash(parent_hash, tokens));
  if (found == by_hash_.end()) return kNone;
  const Entry& entry = entries_[size_t(found->second)];
  const bool same_parent = entry.parent == parent && (parent == kNone || entry.parent_serial == entries_[size_t(parent)].serial);
  if (!same_parent || std::memcmp(entry.tokens, tokens, sizeof(entry.tokens)) != 0) return kNone;
  return found->second;
}

int64_t BlockManager::match_prefix(const int32_t* tokens, int64_t count, int64_t* in_lru) const {
  if (in_lru) *in_lru = 0;
  if (!prefix_caching_ || count <= 1) return 0;
  const int64_t limit = (count - 1) / kKvBlockTokens;
  int32_t parent = kNone;
  int64_t matched = 0;
  while (matched < limit) {
    const int32_t block = find(parent, tokens + matched * kKvBlockTokens);
    if (block == kNone) break;
    if (in_lru && entries_[size_t(block)].references == 0) ++*in_lru;
    parent = block;
    ++matched;
  }
  return matched;
}

void BlockManager::acquire_prefix(const int32_t* tokens, int64_t blocks, TrackedVector<int32_t>* table) {
  int32_t parent = kNone;
  for (int64_t i = 0; i < blocks; ++i) {
    const int32_t block = find(parent, tokens + i * kKvBlockTokens);
    require(block != kNone, ErrorKind::State, "acquire_prefix: the prefix is no longer cached");
    Entry& entry = entries_[size_t(block)];
    if (entry.references++ == 0) {
      lru_remove(block);
      ++used_;
    }
    table->push_back(block);
    parent = block;
  }
}

bool BlockManager::register_block(int32_t block, int32_t parent, const int32_t* tokens) {
  if (!prefix_caching_) return false;
  Entry& entry = entries_[size_t(block)];
  if (entry.registered) return true;
  if (parent != kNone && !entries_[size_t(parent)].registered) return false;
  if (find(parent, tokens) != kNone) return false;  // another sequence computed the same block first
  const uint64_t parent_hash = parent == kNone ? 0 : entries_[size_t(parent)].hash;
  entry.hash = chain_hash(parent_hash, tokens);
  // A different chain under the same 64-bit hash keeps its place; this block stays private.
  if (!by_hash_.emplace(entry.hash, block).second) return false;
  entry.registered = true;
  entry.parent = parent;
  entry.parent_serial = parent == kNone ? 0 : entries_[size_t(parent)].serial;
  entry.serial = next_serial_++;
  std::memcpy(entry.tokens, tokens, sizeof(entry.tokens));
  return true;
}

void BlockManager::unregister(int32_t block) {
  Entry& entry = entries_[size_t(block)];
  if (!entry.registered) return;
  by_hash_.erase(entry.hash);
  entry.registered = false;
  entry.serial = 0;
}

void BlockManager::lru_push_back(int32_t block) {
  Entry& entry = entries_[size_t(block)];
  entry.lru_prev = lru_tail_;
  entry.lru_next = kNone;
  if (lru_tail_ != kNone) entries_[size_t(lru_tail_)].lru_next = block;
  else lru_head_ = block;
  lru_tail_ = block;
  ++lru_count_;
}

void BlockManager::lru_remove(int32_t block) {
  Entry& entry = entries_[size_t(block)];
  if (entry.lru_prev != kNone) entries_[size_t(entry.lru_prev)].lru_next = entry.lru_next;
  else lru_head_ = entry.lru_next;
  if (entry.lru_next != kNone) entries_[size_t(entry.lru_next)].lru_prev = entry.lru_prev;
  else lru_tail_ = entry.lru_prev;
  entry.lru_prev = entry.lru_next = kNone;
  --lru_count_;
}

}  // namespace falcon
