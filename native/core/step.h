#pragma once
// One forward step over a ragged batch: the contract between whoever plans a step (the engine's
// scheduler, or the keras-hub forward call) and the backend that runs it.
#include <cstdint>
#include <vector>

namespace falcon {

// Tokens per KV block. Equal to the CPU attention's key block (kernels.h kKeyBlock), so a block's
// keys are stored in exactly the layout the attention kernel reads.
constexpr int64_t kKvBlockTokens = 16;

// One sequence's part of a step: `count` new tokens at cache slots [start, start + count).
// Slot s lives in block_table[s / kKvBlockTokens] at offset s % kKvBlockTokens; the table covers
// at least slots [0, start + count). Slots before `start` already hold the sequence's earlier tokens.
struct StepSequence {
  const int32_t* block_table = nullptr;
  int64_t block_count = 0;
  int64_t start = 0;
  int64_t count = 0;
  // The length dynamic NTK rotary scaling scales to: the sequence's own length (its whole prompt
  // while the prompt is being prefilled, start + count after), never anything of its batch-mates,
  // so a token's rotation depends neither on the batch nor on how its prompt was chunked.
  int64_t rope_length = 0;
};

struct StepBatch {
  std::vector<StepSequence> sequences;
  // Per token, flat: sequence i's tokens are the `count` consecutive entries after those of sequences < i.
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;  // the token's position (ALiBi, rotary); the cache records it per slot
  std::vector<uint8_t> valid;      // 0 = a padding token (keras-hub inputs only): never attended to
  // Flat token indices whose final hidden state (or logits) the caller wants, in the order wanted.
  std::vector<int64_t> output_rows;

  int64_t token_count() const { return int64_t(token_ids.size()); }
};

}  // namespace falcon
