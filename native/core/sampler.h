#pragma once
// Token sampling on the engine thread, so a decode step returns token ids rather than vocabulary-sized
// rows of logits. Bit-for-bit the samplers of src/samplers.ts (keras-hub's greedy, top-k, top-p,
// temperature and random, with the same seeded xoshiro128** streams): for the same logits, config and
// stream, the TypeScript sampler and this one pick the same tokens.
#include <cstdint>
#include <vector>

#include "memory.h"

namespace falcon {

enum class SamplerKind { Greedy, TopK, TopP, Temperature, Random };

// A resolved sampler configuration (src/samplers.ts ResolvedSamplerConfig).
struct SamplerParams {
  SamplerKind kind = SamplerKind::Greedy;
  int64_t k = 0;        // top-k candidates; for top-p an extra cap, 0 = none
  double p = 1.0;       // top-p probability mass
  double temperature = 1.0;
  double seed = 0;      // a non-negative safe integer, as in TypeScript
};

// Throws Error(Input) naming the field when params are outside what src/samplers.ts accepts.
void validate_sampler_params(const SamplerParams& params);

// One sequence's sampler: its random stream and its scratch, allocated once (nothing per token).
class SequenceSampler {
 public:
  // `stream` is the batch row of the TypeScript sampler (an engine request is row 0).
  explicit SequenceSampler(const SamplerParams& params, uint32_t stream = 0);
  // A token id in [0, allowed) from logits[0 .. allowed).
  int32_t sample(const float* logits, int64_t allowed);

 private:
  // (filled in by the implementation: RNG state, scratch vectors)
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// The model's log-probabilities over the first `allowed` logits (before temperature or truncation,
// as the OpenAI API and vLLM report them): the chosen token's, and the `top` most likely (best first,
// ties to the lower id) into `top_out`.
float token_logprobs(const float* logits, int64_t allowed, int32_t chosen, int64_t top, std::vector<TokenLogprob>* top_out);

}  // namespace falcon
