#include "scheduler.h"

#include <algorithm>
#include <string>

namespace falcon {

int64_t StepPlan::token_count() const {
  int64_t total = 0;
  for (const ScheduledChunk& chunk : chunks) total += chunk.count;
  return total;
}

Scheduler::Scheduler(const SchedulerConfig& config, BlockManager& blocks) : config_(config), blocks_(blocks) {
  require(config.max_batch_tokens >= 1 && config.max_sequences >= 1 && config.max_batch_tokens >= config.max_sequences,
          ErrorKind::Input, "maxBatchTokens must be at least maxSequences (every running sequence decodes a token per step)");
}

void Scheduler::check_fits(int64_t max_slots) const {
  const int64_t needed = blocks_for_slots(max_slots);
  if (needed > blocks_.num_blocks()) {
    throw Error(ErrorKind::Input, "a request of up to " + std::to_string(max_slots) + " tokens needs " + std::to_string(needed) +
                                      " KV blocks but the engine's pool has " + std::to_string(blocks_.num_blocks()) +
                                      "; lower maxNewTokens or maxLength, or give the engine a larger kvCacheBytes");
  }
}

void Scheduler::insert_by_arrival(std::vector<Sequence*>* queue, Sequence* sequence) {
  auto at = std::lower_bound(queue->begin(), queue->end(), sequence,
                             [](const Sequence* a, const Sequence* b) { return a->id < b->id; });
  queue->insert(at, sequence);
}

void Scheduler::erase(std::vector<Sequence*>* queue, Sequence* sequence) {
  auto at = std::find(queue->begin(), queue->end(), sequence);
  if (at != queue->end()) queue->erase(at);
}

void Scheduler::reset() {
  waiting_.clear();
  running_.clear();
}

void Scheduler::add(Sequence* sequence) {
  sequence->running = false;
  insert_by_arrival(&waiting_, sequence);
}

void Scheduler::release_blocks(Sequence* sequence) {
  for (int32_t block : sequence->block_table) blocks_.release(block);
  sequence->block_table.clear();
  sequence->computed = 0;
  sequence->registered = 0;
}

void Scheduler::remove(Sequence* sequence) {
  erase(sequence->running ? &running_ : &waiting_, sequence);
  release_blocks(sequence);
  sequence->running = false;
}

void Scheduler::preempt(Sequence* sequence, StepPlan* plan) {
  erase(&running_, sequence);
  release_blocks(sequence);
  sequence->running = false;
  insert_by_arrival(&waiting_, sequence);
  plan->preempted.push_back(sequence);
  ++preemptions_;
}

int64_t Scheduler::rope_length(const Sequence& sequence, int64_t count) const {
  // A prompt chunk sees the whole prompt's length; a recompute after preemption may run past the prompt
  // in one chunk (never under dynamic NTK: next_chunk stops it at the prompt's end).
  const int64_t end = sequence.computed + count;
  return sequence.computed < sequence.prompt_length ? std::max(sequence.prompt_length, end) : end;
}

int64_t Scheduler::next_chunk(const Sequence& sequence, int64_t budget) const {
  int64_t count = std::min(int64_t(sequence.tokens.size()) - sequence.computed, budget);
  if (config_.length_dependent_rotary) {
    if (sequence.computed < sequence.prompt_length) count = std::min(count, sequence.prompt_length - sequence.computed);
    else count = std::min<int64_t>(count, 1);
  }
  return std::max<int64_t>(count, 0);
}

bool Scheduler::admit(Sequence* sequence) {
  const int64_t length = int64_t(sequence->tokens.size());
  int64_t hits_unreferenced = 0;
  const int64_t hits = blocks_.match_prefix(sequence->tokens.data(), length, &hits_unreferenced);
  const int64_t needed = blocks_for_slots(length) - hits;
  if (needed > blocks_.allocatable() - hits_unreferenced) return false;
  blocks_.acquire_prefix(sequence->tokens.data(), hits, &sequence->block_table);
  for (int64_t i = 0; i < needed; ++i) sequence->block_table.push_back(blocks_.allocate());
  sequence->computed = hits * kKvBlockTokens;
  sequence->registered = hits;
  prefix_hit_tokens_ += hits * kKvBlockTokens;
  erase(&waiting_, sequence);
  sequence->running = true;
  insert_by_arrival(&running_, sequence);
  return true;
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int64_t budget = config_.max_batch_tokens;
  std::vector<Sequence*> scheduled;  // running sequences already in this step

  // 1. Decodes, oldest first.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* sequence = running_[i];
    if (int64_t(sequence->tokens.size()) - sequence->computed != 1) {
      ++i;
      continue;
    }
    bool preempted_itself = false;
    while (sequence->computed >= int64_t(sequence->block_table.size()) * kKvBlockTokens) {
      const int32_t block = blocks_.allocate();
      if (block >= 0) {
        sequence->block_table.push_back(block);
        break;
      }
      // The youngest running sequence not yet in this step: sequences before i are all scheduled.
      Sequence* victim = running_.back();
      preempt(victim, &plan);
      if (victim == sequence) {
        preempted_itself = true;
        break;
      }
    }
    if (preempted_itself) break;  // it was the youngest: every other running one is scheduled
    plan.chunks.push_back({sequence, sequence->computed, 1, rope_length(*sequence, 1), true});
    scheduled.push_back(sequence);
    budget -= 1;
    ++i;
  }

  // 2. Running prompts, oldest first.
  for (Sequence* sequence : running_) {
    if (budget <= 0) break;
    if (int64_t(sequence->tokens.size()) - sequence->computed <= 1) continue;  // a decode (scheduled or out of budget)
    const int64_t count = next_chunk(*sequence, budget);
    const bool last = sequence->computed + count == int64_t(sequence->tokens.size());
    plan.chunks.push_back({sequence, sequence->computed, count, rope_length(*sequence, count), last});
    budget -= count;
  }

  // 3. Admission in arrival order.
  while (!waiting_.empty() && budget > 0 && int64_t(running_.size()) < config_.max_sequences) {
    Sequence* sequence = waiting_.front();
    if (!admit(sequence)) break;
    const int64_t count = next_chunk(*sequence, budget);
    const bool last = sequence->computed + count == int64_t(sequence->tokens.size());
    plan.chunks.push_back({sequence, sequence->computed, count, rope_length(*sequence, count), last});
    budget -= count;
  }
  return plan;
}

void Scheduler::complete(const StepPlan& plan) {
  for (const ScheduledChunk& chunk : plan.chunks) {
    Sequence* sequence = chunk.sequence;
    sequence->computed = chunk.start + chunk.count;
    const int64_t full = sequence->computed / kKvBlockTokens;
    for (; sequence->registered < full; ++sequence->registered) {
      const int64_t index = sequence->registered;
      blocks_.register_block(sequence->block_table[size_t(index)], index == 0 ? -1 : sequence->block_table[size_t(index - 1)],
                             sequence->tokens.data() + index * kKvBlockTokens);
    }
  }
}

}  // namespace falcon
