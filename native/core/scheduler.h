#pragma once
// The engine's scheduling policy, in one place (vLLM-like). Every step, within a budget of
// max_batch_tokens tokens and at most max_sequences running sequences:
//   1. running sequences with one token left to compute (decodes) get it, oldest first; one whose
//      next slot needs a block when none is left preempts the youngest running sequence not yet in
//      this step (possibly itself): its blocks are released and it goes back to the waiting queue, in
//      arrival order, to recompute its prompt and generated tokens later;
//   2. running prompts continue with their next chunk, oldest first, within the remaining budget;
//   3. waiting sequences are admitted in arrival order while the budget, max_sequences and the blocks
//      for their whole prompt (after prefix-cache hits) allow; the first that does not fit stops
//      admission, so a long request is never overtaken forever by short ones.
// A sequence's blocks for all its tokens are taken at admission, so only decodes ever need new blocks.
#include <cstdint>
#include <vector>

#include "block_manager.h"
#include "memory.h"

namespace falcon {

struct SchedulerConfig {
  int64_t max_batch_tokens = 512;
  int64_t max_sequences = 64;
  // Dynamic NTK rotary: a key's rotation depends on the sequence's length when it was computed (its
  // whole prompt for prompt tokens, its length so far for generated ones), so a recompute replays the
  // prompt in chunks that stay within the prompt and the generated tokens one at a time.
  bool length_dependent_rotary = false;
};

// One request's scheduling state; the engine owns it.
struct Sequence {
  uint64_t id = 0;  // increasing with arrival: the scheduler's notion of age
  TrackedVector<int32_t> tokens;  // prompt, then generated tokens
  int64_t prompt_length = 0;
  int64_t computed = 0;                // leading tokens whose keys and values are in the blocks
  TrackedVector<int32_t> block_table;  // blocks for slots [0, 16 × size)
  int64_t registered = 0;              // leading blocks already offered to the prefix cache
  bool running = false;
};

struct ScheduledChunk {
  Sequence* sequence = nullptr;
  int64_t start = 0;  // = sequence->computed when planned
  int64_t count = 0;
  int64_t rope_length = 0;
  // The chunk ends at the sequence's last token: the step returns its logits.
  bool wants_logits = false;
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  std::vector<Sequence*> preempted;
  int64_t token_count() const;
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, BlockManager& blocks);

  const SchedulerConfig& config() const { return config_; }
  // Throws Error(Input) when a sequence that writes `max_slots` KV slots could never fit the pool.
  void check_fits(int64_t max_slots) const;
  void add(Sequence* sequence);
  // Drops a sequence (finished, cancelled or failed) from the queues and releases its blocks.
  void remove(Sequence* sequence);
  StepPlan schedule();
  // Forgets every sequence without touching the blocks (the engine resets those itself).
  void reset();
  // Marks the plan's tokens computed and offers newly full blocks to the prefix cache.
  void complete(const StepPlan& plan);

  int64_t waiting() const { return int64_t(waiting_.size()); }
  int64_t running() const { return int64_t(running_.size()); }
  bool idle() const { return waiting_.empty() && running_.empty(); }
  int64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }
  int64_t preemptions() const { return preemptions_; }

 private:
  // The chunk a running sequence computes next within `budget` tokens (0: none).
  int64_t next_chunk(const Sequence& sequence, int64_t budget) const;
  int64_t rope_length(const Sequence& sequence, int64_t count) const;
  void preempt(Sequence* sequence, StepPlan* plan);
  bool admit(Sequence* sequence);
  void release_blocks(Sequence* sequence);
  static void insert_by_arrival(std::vector<Sequence*>* queue, Sequence* sequence);
  static void erase(std::vector<Sequence*>* queue, Sequence* sequence);

  SchedulerConfig config_;
  BlockManager& blocks_;
  std::vector<Sequence*> waiting_;  // arrival order
  std::vector<Sequence*> running_;  // arrival order
  int64_t prefix_hit_tokens_ = 0;
  int64_t preemptions_ = 0;
};

inline int64_t blocks_for_slots(int64_t slots) { return (slots + kKvBlockTokens - 1) / kKvBlockTokens; }

}  // namespace falcon
