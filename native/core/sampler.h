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
  // A token id in [0, allowed) from logits[0 .. allowed): draw(), then sample_drawn (greedy draws nothing).
  int32_t sample(const float* logits, int64_t allowed);
  // The stream's next uniform in [0, 1): the one draw each sampled token takes.
  double draw();
  // What sample(logits, allowed) gives when its draw was `u`. Throws Error(State) for a greedy sampler.
  int32_t sample_drawn(double u, const float* logits, int64_t allowed);
  // A draw a backend can make on its device from the row's logits over [0, allowed) and the draw
  // alone (softmax_draw.h's weights, then pick's inverse CDF in id order): that of the samplers over
  // the whole row (temperature and random above temperature 0, and top-p of a mass below 1 with no
  // cap below `allowed`); temperature 0 for the others.
  struct DeviceDraw {
    double temperature = 0;
    double top_p = 0;  // in (0, 1): the draw is from the nucleus of this mass; 0: from the whole softmax
  };
  DeviceDraw device_draw(int64_t allowed) const;
  // How many of a row's best candidates (rank_top_k's order over [0, allowed)) sample_candidates
  // needs: 1 for argmax (greedy, temperature 0), the k of top-k, the cap of a top-p capped below
  // `allowed`; 0 when the sampler needs the whole row (temperature, random, uncapped top-p).
  int64_t candidates_needed(int64_t allowed) const;
  // What sample(logits, allowed) gives, and the same draw from the stream, from the row's
  // candidates_needed(allowed) best ids and their logits, in rank_top_k's order. Throws
  // Error(Input) when `count` is not what candidates_needed asks for (never 0).
  int32_t sample_candidates(const int32_t* ids, const float* values, int64_t count, int64_t allowed);

 private:
  // The arithmetic both share: the configured distribution over `count` candidates, candidate i
  // being id ids[i] (i when ids is null) with logit logit_of(i); `u` is the draw.
  template <typename LogitOf>
  int32_t sample_ranked(const LogitOf& logit_of, const int32_t* ids, int64_t count, double u);
  // SamplerScratch.ensure: every buffer is replaced by one of `size` when it is smaller.
  void ensure_scratch(int64_t size);

  SamplerParams params_;
  uint32_t state_[4] = {0, 0, 0, 0};  // xoshiro128**
  int64_t scratch_size_ = 0;
  TrackedVector<int32_t> ids_;
  TrackedVector<double> weights_;
  TrackedVector<int32_t> candidates_;
  TrackedVector<double> probabilities_;
  TrackedVector<int32_t> selected_;
  TrackedVector<uint8_t> flags_;
  TrackedVector<int32_t> order_;  // the sort path of top-k over more than 128 candidates
};

// The ids of the `count` (≤ allowed) largest of logits[0 .. allowed) into best[0 .. count), best first:
// larger value first, ties to the lower id, NaN after every number (NaN ids in id order). `order`
// is scratch for counts above 128 (grown to `allowed` once). The order top-k and capped top-p draw in.
void rank_top_k(const float* logits, int64_t allowed, int64_t count, int32_t* best, TrackedVector<int32_t>* order);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// The model's log-probabilities over the first `allowed` logits (before temperature or truncation,
// as the OpenAI API and vLLM report them): the chosen token's, and the `top` most likely (best first,
// ties to the lower id) into `top_out`. NaN counts as -Infinity; +Infinity logits share the mass
// equally; a row with neither a finite nor a +Infinity logit gives id 0 all of it (the samplers'
// fallback). Throws Error(Input) for a chosen id outside [0, allowed) or a negative `top`.
float token_logprobs(const float* logits, int64_t allowed, int32_t chosen, int64_t top, std::vector<TokenLogprob>* top_out);

}  // namespace falcon
