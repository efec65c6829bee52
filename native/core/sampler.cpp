// The samplers of src/samplers.ts, branch for branch: the same arithmetic in the same order, in double
// precision, with V8's exp, so that both pick the same token for the same logits, config and stream.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "error.h"
#include "softmax_draw.h"

// Contracting a * b + c into one fused multiply-add rounds once instead of twice and so changes the
// last bit of exp and of the softmax weights; JavaScript never contracts.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace falcon {
namespace {

constexpr double kNegativeInfinity = -std::numeric_limits<double>::infinity();
constexpr double kPositiveInfinity = std::numeric_limits<double>::infinity();
// Above this k, top-k selection sorts instead of inserting into a sorted prefix (INSERTION_TOP_K_LIMIT).
constexpr int64_t kInsertionTopKLimit = 128;
constexpr double kMaxSafeInteger = 9007199254740991.0;

// splitmix32 step: advances `state` and returns the mixed word.
uint32_t splitmix32(uint32_t* state) {
  *state += 0x9E3779B9u;
  uint32_t z = *state;
  z = (z ^ (z >> 16)) * 0x85EBCA6Bu;
  z = (z ^ (z >> 13)) * 0xC2B2AE35u;
  return z ^ (z >> 16);
}

uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

std::string describe(double value) {
  char text[40];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

void check_row(const float* logits, int64_t allowed) {
  require(logits != nullptr && allowed > 0 && allowed <= std::numeric_limits<int32_t>::max(), ErrorKind::Input,
          "a logits row needs between 1 and 2^31 - 1 values, got " + std::to_string(allowed));
}

// The id of the largest logit; the lowest id wins ties; NaN counts as -Infinity.
int32_t argmax(const float* logits, int64_t allowed) {
  int32_t best = 0;
  double best_value = kNegativeInfinity;
  for (int64_t i = 0; i < allowed; ++i) {
    const double value = logits[i];
    if (value > best_value) {
      best_value = value;
      best = int32_t(i);
    }
  }
  return best;
}

// True when id `a` ranks before id `b`: larger logit first, then the lower id; NaN after everything.
bool ranks_before(const float* logits, int32_t a, int32_t b) {
  const float va = logits[a];
  const float vb = logits[b];
  return va > vb || (va == vb && a < b) || (std::isnan(vb) && !std::isnan(va));
}

// The same order as a strict total order (NaN ids last, by id), which ranks_before is on every pair
// but two NaNs: what the TypeScript sort comparator falls back to with `a - b`.
bool sorts_before(const float* logits, int32_t a, int32_t b) {
  const float va = logits[a];
  const float vb = logits[b];
  const bool a_nan = std::isnan(va);
  const bool b_nan = std::isnan(vb);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && va != vb) return va > vb;
  return a < b;
}

}  // namespace

// Insertion keeps NaN ids in id order at the end, which is exactly the sort order, so both paths
// give the same ids in the same order.
void rank_top_k(const float* logits, int64_t allowed, int64_t count, int32_t* best, TrackedVector<int32_t>* order) {
  if (count > kInsertionTopKLimit) {
    if (int64_t(order->size()) < allowed) {
      require_memory(ByteCount(uint64_t(allowed)) * sizeof(int32_t), ErrorKind::Input, "top-k candidates");
      order->resize(size_t(allowed));
    }
    for (int64_t id = 0; id < allowed; ++id) (*order)[size_t(id)] = int32_t(id);
    std::partial_sort(order->begin(), order->begin() + count, order->begin() + allowed,
                      [logits](int32_t a, int32_t b) { return sorts_before(logits, a, b); });
    std::copy(order->begin(), order->begin() + count, best);
    return;
  }
  int64_t filled = 0;
  for (int64_t id = 0; id < allowed; ++id) {
    if (filled == count && !ranks_before(logits, int32_t(id), best[count - 1])) continue;
    int64_t position = filled < count ? filled++ : count - 1;
    while (position > 0 && ranks_before(logits, int32_t(id), best[position - 1])) {
      best[position] = best[position - 1];
      --position;
    }
    best[position] = int32_t(id);
  }
}

namespace {

// Unnormalised probabilities exp((logit − max) / temperature) of `count` candidates, candidate i's
// logit being logit_of(i), into `weights`; returns their sum. NaN and -Infinity logits get weight 0;
// when every candidate is -Infinity or NaN, the first one gets everything.
template <typename LogitOf>
double softmax_weights(const LogitOf& logit_of, int64_t count, double temperature, double* weights) {
  double max = kNegativeInfinity;
  for (int64_t i = 0; i < count; ++i) {
    const double value = logit_of(i);
    if (value > max) max = value;
  }
  if (max == kNegativeInfinity) {
    std::fill(weights, weights + count, 0.0);
    weights[0] = 1;
    return 1;
  }
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    weights[i] = softmax_draw::draw_weight(logit_of(i), max, temperature);
    sum += weights[i];
  }
  return sum;
}

// Inverse-CDF draw: the index where the running sum of weights passes u · total.
int64_t pick(const double* weights, int64_t count, double total, double u) {
  const double target = u * total;
  double running = 0;
  int64_t last = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double weight = weights[i];
    if (weight <= 0) continue;
    running += weight;
    last = i;
    if (target < running) return i;
  }
  return last;
}

}  // namespace

void validate_sampler_params(const SamplerParams& params) {
  const bool known = params.kind == SamplerKind::Greedy || params.kind == SamplerKind::TopK ||
                     params.kind == SamplerKind::TopP || params.kind == SamplerKind::Temperature ||
                     params.kind == SamplerKind::Random;
  require(known, ErrorKind::Input, "sampler must be one of greedy, topK, topP, temperature, random");
  require(std::isfinite(params.temperature) && !(params.temperature < 0), ErrorKind::Input,
          "sampler temperature must be a finite number ≥ 0, got " + describe(params.temperature));
  if (params.kind == SamplerKind::TopK) {
    require(params.k > 0, ErrorKind::Input, "sampler k must be a positive integer, got " + std::to_string(params.k));
  }
  if (params.kind == SamplerKind::TopP) {
    require(params.k >= 0, ErrorKind::Input, "sampler k must be a positive integer, got " + std::to_string(params.k));
    require(params.p > 0 && params.p <= 1, ErrorKind::Input, "sampler p must be a number in (0, 1], got " + describe(params.p));
  }
  require(std::isfinite(params.seed) && params.seed >= 0 && params.seed <= kMaxSafeInteger &&
              std::floor(params.seed) == params.seed,
          ErrorKind::Input, "sampler seed must be a non-negative integer, got " + describe(params.seed));
}

SequenceSampler::SequenceSampler(const SamplerParams& params, uint32_t stream) : params_(params) {
  validate_sampler_params(params);
  if (params.kind == SamplerKind::Greedy) return;  // draws nothing: its stream is never made
  // SeededRandom(seed, stream): the seed's high part and the stream number pick the splitmix32
  // start, the low 32 bits are mixed into it.
  const uint64_t seed = uint64_t(params.seed);
  uint32_t state = uint32_t(seed >> 32) ^ ((stream + 1u) * 0x632BE5ABu);
  state ^= uint32_t(seed);
  state_[0] = splitmix32(&state);
  state_[1] = splitmix32(&state);
  state_[2] = splitmix32(&state);
  state_[3] = splitmix32(&state);
  if ((state_[0] | state_[1] | state_[2] | state_[3]) == 0) state_[0] = 1;
}

// src/samplers.ts SeededRandom.next(): a uniform double in [0, 1) with 53 random bits.
double SequenceSampler::draw() {
  uint32_t* s = state_;
  auto next_uint32 = [s] {
    const uint32_t result = rotl(s[1] * 5u, 7) * 9u;
    const uint32_t t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  const uint32_t high = next_uint32() >> 5;
  const uint32_t low = next_uint32() >> 6;
  return (double(high) * 67108864.0 + double(low)) / 9007199254740992.0;
}

void SequenceSampler::ensure_scratch(int64_t size) {
  if (scratch_size_ >= size) return;
  const uint64_t bytes_per_id = 3 * sizeof(int32_t) + 2 * sizeof(double) + sizeof(uint8_t);
  require_memory(ByteCount(uint64_t(size)) * bytes_per_id, ErrorKind::Input, "sampler scratch");
  const size_t n = size_t(size);
  ids_.assign(n, 0);
  weights_.assign(n, 0.0);
  candidates_.assign(n, 0);
  probabilities_.assign(n, 0.0);
  selected_.assign(n, 0);
  flags_.assign(n, 0);
  scratch_size_ = size;
}

int64_t SequenceSampler::candidates_needed(int64_t allowed) const {
  if (params_.kind == SamplerKind::Greedy || params_.temperature == 0) return 1;  // argmax
  if (params_.kind == SamplerKind::TopK) return std::min(params_.k, allowed);
  // A cap below the vocabulary ranks its candidates; without one (or one the vocabulary is within)
  // the nucleus is chosen from every id, in id order.
  if (params_.kind == SamplerKind::TopP && params_.k != 0 && params_.k < allowed) return params_.k;
  return 0;
}

int32_t SequenceSampler::sample(const float* logits, int64_t allowed) {
  if (params_.kind == SamplerKind::Greedy) {
    check_row(logits, allowed);
    return argmax(logits, allowed);
  }
  // TypeScript draws before the sampler runs, even when temperature 0 makes it greedy.
  return sample_drawn(draw(), logits, allowed);
}

int32_t SequenceSampler::sample_drawn(double u, const float* logits, int64_t allowed) {
  require(params_.kind != SamplerKind::Greedy, ErrorKind::State, "a greedy sampler takes no draw");
  check_row(logits, allowed);
  if (params_.temperature == 0) return argmax(logits, allowed);
  const int64_t ranked = candidates_needed(allowed);
  if (ranked == 0) {
    ensure_scratch(allowed);
    return sample_ranked([logits](int64_t i) { return logits[i]; }, nullptr, allowed, u);
  }
  ensure_scratch(ranked);
  int32_t* ids = candidates_.data();
  rank_top_k(logits, allowed, ranked, ids, &order_);
  return sample_ranked([logits, ids](int64_t i) { return logits[ids[i]]; }, ids, ranked, u);
}

SequenceSampler::DeviceDraw SequenceSampler::device_draw(int64_t allowed) const {
  if (params_.temperature == 0) return {};
  if (params_.kind == SamplerKind::Temperature || params_.kind == SamplerKind::Random) return {params_.temperature, 0.0};
  // A nucleus of mass 1 is cut by the rounding of its sums alone (whether they reach 1 before the
  // smallest probabilities), which only the host's order of summation decides.
  if (params_.kind == SamplerKind::TopP && candidates_needed(allowed) == 0 && params_.p < 1) return {params_.temperature, params_.p};
  return {};
}

int32_t SequenceSampler::sample_candidates(const int32_t* ids, const float* values, int64_t count, int64_t allowed) {
  require(ids != nullptr && values != nullptr && allowed > 0 && allowed <= std::numeric_limits<int32_t>::max(), ErrorKind::Input,
          "candidates need ids, values and an allowed vocabulary between 1 and 2^31 - 1");
  const int64_t needed = candidates_needed(allowed);
  require(needed > 0 && count == needed, ErrorKind::Input, [&] {
    return "this sampler needs " + (needed == 0 ? std::string("the whole logits row") : std::to_string(needed) + " candidates") +
           ", got " + std::to_string(count);
  });
  // argmax over the row: the best candidate unless no logit beats -Infinity (all -Infinity or NaN),
  // when argmax keeps id 0.
  const auto best = [ids, values] { return double(values[0]) > kNegativeInfinity ? ids[0] : 0; };
  if (params_.kind == SamplerKind::Greedy) return best();
  const double u = draw();  // drawn as sample() draws it
  if (params_.temperature == 0) return best();
  ensure_scratch(count);
  return sample_ranked([values](int64_t i) { return values[i]; }, ids, count, u);
}

template <typename LogitOf>
int32_t SequenceSampler::sample_ranked(const LogitOf& logit_of, const int32_t* ids, int64_t count, double u) {
  const double temperature = params_.temperature;
  const auto id_of = [ids](int64_t i) { return ids ? ids[i] : int32_t(i); };
  switch (params_.kind) {
    case SamplerKind::TopK: {
      const double total = softmax_weights(logit_of, count, temperature, weights_.data());
      return id_of(pick(weights_.data(), count, total, u));
    }
    case SamplerKind::TopP: {
      // selectNucleus: the nucleus into ids_[0 .. kept) with its probabilities in weights_.
      double* probabilities = probabilities_.data();
      const double total = softmax_weights(logit_of, count, temperature, probabilities);
      int32_t* work = selected_.data();
      int64_t size = 0;
      for (int64_t i = 0; i < count; ++i) {
        probabilities[i] = probabilities[i] / total;
        if (probabilities[i] > 0) work[size++] = int32_t(i);
      }
      // Candidates are compared by probability, then by their index (id order, or rank with k).
      auto better = [probabilities](int32_t a, int32_t b) {
        return probabilities[a] > probabilities[b] || (probabilities[a] == probabilities[b] && a < b);
      };
      // Quickselect: work[0 .. lo) is in the nucleus, work[hi .. size) is out, work[lo .. hi) undecided.
      // The mass is summed in the TypeScript partition order, so the cut falls at the same place.
      const double p = params_.p;
      int64_t lo = 0;
      int64_t hi = size;
      double mass = 0;
      while (lo < hi && mass < p) {
        const int64_t middle = (lo + hi) >> 1;
        const int32_t pivot = work[middle];
        work[middle] = work[hi - 1];
        work[hi - 1] = pivot;
        int64_t store = lo;
        double mass_better = 0;
        for (int64_t j = lo; j < hi - 1; ++j) {
          const int32_t candidate = work[j];
          if (better(candidate, pivot)) {
            work[j] = work[store];
            work[store++] = candidate;
            mass_better += probabilities[candidate];
          }
        }
        work[hi - 1] = work[store];
        work[store] = pivot;
        if (mass + mass_better >= p) {
          hi = store;
        } else {
          mass += mass_better + probabilities[pivot];
          lo = store + 1;
        }
      }
      uint8_t* kept = flags_.data();
      for (int64_t i = 0; i < count; ++i) kept[i] = 0;
      for (int64_t n = 0; n < lo; ++n) kept[work[n]] = 1;
      int64_t kept_count = 0;
      for (int64_t i = 0; i < count; ++i) {
        if (!kept[i]) continue;
        ids_[size_t(kept_count)] = id_of(i);
        weights_[size_t(kept_count++)] = probabilities[i];
      }
      // sampleTopP.
      double kept_total = 0;
      for (int64_t i = 0; i < kept_count; ++i) kept_total += weights_[size_t(i)];
      return ids_[size_t(pick(weights_.data(), kept_count, kept_total, u))];
    }
    case SamplerKind::Temperature:
    case SamplerKind::Random: {
      const double total = softmax_weights(logit_of, count, temperature, weights_.data());
      return id_of(pick(weights_.data(), count, total, u));
    }
    case SamplerKind::Greedy:
      break;
  }
  throw Error(ErrorKind::State, "a greedy sampler has no distribution to draw from");
}

float token_logprobs(const float* logits, int64_t allowed, int32_t chosen, int64_t top, std::vector<TokenLogprob>* top_out) {
  check_row(logits, allowed);
  require(chosen >= 0 && chosen < allowed, ErrorKind::Input,
          "chosen token " + std::to_string(chosen) + " is outside [0, " + std::to_string(allowed) + ")");
  require(top >= 0, ErrorKind::Input, "top logprobs must be ≥ 0, got " + std::to_string(top));
  // NaN counts as -Infinity throughout.
  auto value_of = [logits](int64_t id) {
    const double value = logits[id];
    return std::isnan(value) ? kNegativeInfinity : value;
  };
  double max = kNegativeInfinity;
  int64_t infinite = 0;
  for (int64_t i = 0; i < allowed; ++i) {
    const double value = value_of(i);
    if (value > max) max = value;
    if (value == kPositiveInfinity) ++infinite;
  }
  // log softmax. +Infinity logits share the mass equally; a row with no finite or +Infinity logit
  // gives all of it to id 0, as the samplers' fallback does.
  double log_sum = 0;
  if (max != kPositiveInfinity && max != kNegativeInfinity) {
    double sum = 0;
    for (int64_t i = 0; i < allowed; ++i) {
      const double value = value_of(i);
      if (value > kNegativeInfinity) sum += std::exp(value - max);
    }
    log_sum = std::log(sum);
  }
  auto logprob_of = [&](int64_t id) -> double {
    const double value = value_of(id);
    if (max == kPositiveInfinity) return value == kPositiveInfinity ? -std::log(double(infinite)) : kNegativeInfinity;
    if (max == kNegativeInfinity) return id == 0 ? 0.0 : kNegativeInfinity;
    return value > kNegativeInfinity ? (value - max) - log_sum : kNegativeInfinity;
  };

  if (top_out != nullptr) {
    top_out->clear();
    const int64_t wanted = std::min(top, allowed);
    // Best first: larger logit, then the lower id (logprobs are monotone in the logit). A heap
    // whose front is the worst kept id.
    auto better = [&](const TokenLogprob& a, const TokenLogprob& b) {
      const double va = value_of(a.token);
      const double vb = value_of(b.token);
      return va > vb || (va == vb && a.token < b.token);
    };
    for (int64_t id = 0; id < allowed && wanted > 0; ++id) {
      const TokenLogprob entry{int32_t(id), 0.0f};
      if (int64_t(top_out->size()) < wanted) {
        top_out->push_back(entry);
        std::push_heap(top_out->begin(), top_out->end(), better);
      } else if (better(entry, top_out->front())) {
        std::pop_heap(top_out->begin(), top_out->end(), better);
        top_out->back() = entry;
        std::push_heap(top_out->begin(), top_out->end(), better);
      }
    }
    std::sort_heap(top_out->begin(), top_out->end(), better);
    for (TokenLogprob& entry : *top_out) entry.logprob = float(logprob_of(entry.token));
  }
  return float(logprob_of(chosen));
}

}  // namespace falcon
