#pragma once
// A StepRunner without a model, for tests of the engine and its policy. It keeps, per KV slot, the
// token and position written there, and a row's logits are a function of everything its sequence
// reads through its block table: the greedy next token is FNV-1a (32-bit) over the token ids in slots
// [0, position], modulo the vocabulary; logit[v] = −((v − next) mod V) / 8. So a block table that
// points at the wrong blocks, a shared block that was overwritten, or a recompute that differs shows
// up as different tokens. It refuses (Error(State)) a step that writes into a block another sequence
// of the step reads, or reads a slot never written or written at another position.
#include <cstdint>

#include "memory.h"
#include "step_runner.h"

namespace falcon {

struct FakeRunnerOptions {
  int64_t vocab_size = 0;
  int64_t num_blocks = 0;
  int64_t step_delay_ms = 0;  // each step sleeps this long: deterministic timing for tests
  int32_t fail_token = -1;    // a step that feeds this token fails as out of memory (std::bad_alloc)
};

class FakeStepRunner : public StepRunner {
 public:
  explicit FakeStepRunner(const FakeRunnerOptions& options);
  int64_t vocab_size() const override { return options_.vocab_size; }
  int64_t num_blocks() const override { return options_.num_blocks; }
  void run(const StepBatch& batch, float* logits_out) override;

 private:
  struct Slot {
    int32_t token = -1;
    int32_t position = -1;
  };
  Slot& slot(const StepSequence& sequence, int64_t index);

  FakeRunnerOptions options_;
  TrackedVector<Slot> slots_;  // num_blocks × 16
};

}  // namespace falcon
