#include "fake_step_runner.h"

#include <chrono>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>

namespace falcon {

FakeStepRunner::FakeStepRunner(const FakeRunnerOptions& options) : options_(options) {
  require(options.vocab_size >= 1 && options.vocab_size <= (int64_t(1) << 24), ErrorKind::Input, "vocabSize must be in [1, 2^24]");
  require(options.num_blocks >= 1 && options.num_blocks <= (int64_t(1) << 24), ErrorKind::Input, "numBlocks must be in [1, 2^24]");
  require(options.step_delay_ms >= 0 && options.step_delay_ms <= 10000, ErrorKind::Input, "stepDelayMs must be in [0, 10000]");
  require_memory(ByteCount(uint64_t(options.num_blocks)) * uint64_t(kKvBlockTokens) * sizeof(Slot), ErrorKind::Input,
                 "the fake runner's slots");
  slots_.resize(size_t(options.num_blocks * kKvBlockTokens));
}

FakeStepRunner::Slot& FakeStepRunner::slot(const StepSequence& sequence, int64_t index) {
  const int64_t table_index = index / kKvBlockTokens;
  require(table_index < sequence.block_count, ErrorKind::State,
          "fake runner: slot " + std::to_string(index) + " is past the block table");
  const int32_t block = sequence.block_table[table_index];
  require(block >= 0 && block < options_.num_blocks, ErrorKind::State, "fake runner: block id out of range");
  return slots_[size_t(block) * size_t(kKvBlockTokens) + size_t(index % kKvBlockTokens)];
}

void FakeStepRunner::run(const StepBatch& batch, float* logits_out) {
  const int64_t V = options_.vocab_size;
  // Which sequence of the step references each block.
  std::unordered_map<int32_t, size_t> owner;
  std::unordered_map<int32_t, bool> shared;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const StepSequence& sequence = batch.sequences[s];
    for (int64_t i = 0; i < sequence.block_count; ++i) {
      auto [at, inserted] = owner.emplace(sequence.block_table[i], s);
      if (!inserted && at->second != s) shared[sequence.block_table[i]] = true;
    }
  }
  // Writes, then reads: a row sees its own sequence's earlier tokens of this step.
  std::vector<int64_t> sequence_of_token;
  int64_t flat = 0;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const StepSequence& sequence = batch.sequences[s];
    require(sequence.count >= 1, ErrorKind::State, "fake runner: an empty chunk");
    for (int64_t i = 0; i < sequence.count; ++i, ++flat) {
      const int32_t token = batch.token_ids[size_t(flat)];
      if (token == options_.fail_token) throw std::bad_alloc();
      require(token >= 0 && token < V, ErrorKind::State, "fake runner: token out of range");
      require(batch.positions[size_t(flat)] == sequence.start + i, ErrorKind::State, "fake runner: wrong position");
      const int64_t index = sequence.start + i;
      const int32_t block = sequence.block_table[index / kKvBlockTokens];
      require(!shared.count(block), ErrorKind::State,
              "fake runner: a step writes slot " + std::to_string(index) + " of block " + std::to_string(block) +
                  ", which another sequence of the step reads");
      Slot& target = slot(sequence, index);
      target.token = token;
      target.position = int32_t(index);
      sequence_of_token.push_back(int64_t(s));
    }
  }
  require(flat == batch.token_count(), ErrorKind::State, "fake runner: token count mismatch");
  for (size_t row = 0; row < batch.output_rows.size(); ++row) {
    const int64_t token_index = batch.output_rows[row];
    const StepSequence& sequence = batch.sequences[size_t(sequence_of_token[size_t(token_index)])];
    const int32_t position = batch.positions[size_t(token_index)];
    uint32_t hash = 2166136261u;
    for (int64_t index = 0; index <= position; ++index) {
      const Slot& read = slot(sequence, index);
      require(read.position == index, ErrorKind::State,
              "fake runner: slot " + std::to_string(index) + " holds position " + std::to_string(read.position));
      hash = (hash ^ uint32_t(read.token)) * 16777619u;
    }
    const int64_t next = int64_t(hash % uint32_t(V));
    float* logits = logits_out + row * size_t(V);
    for (int64_t v = 0; v < V; ++v) logits[v] = -float((v - next + V) % V) / 8.0f;
  }
  if (options_.step_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options_.step_delay_ms));
}

}  // namespace falcon
