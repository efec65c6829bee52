// The token of each row whose sampler draws from the row's softmax (temperature and random over every
// id; top-p over the nucleus it cuts from every id), drawn on the device so that a step copies back one
// id instead of a vocabulary of logits, and the host never computes a vocabulary of exps per token. It
// is the host sampler's draw exactly (SequenceSampler::sample_drawn): the same weights (softmax_draw.h,
// V8's exp in double precision; this file is compiled with --fmad=false) summed in the same order, id
// by id, so the same token for the same logits and draw.
//
// One block per row. A sum the host runs in id order is sequential by definition (floating-point
// addition does not associate), so one lane runs it while the other warps compute the next chunk's
// weights; the running sum at each chunk's end is kept, and the chunk where the draw lands is summed
// again to find the id.
//
// Top-p's nucleus is the smallest run of the most probable ids (ties to the lower id) whose mass
// reaches p. The host finds it by quickselect, summing masses in its partition order; any order of
// summation errs by at most γ_n of the mass, so wherever every prefix's exact mass lies farther than
// twice that from p, every order cuts at the same place. The kernel finds the cut by a radix select
// over the probabilities' bits with masses summed in any order, checks that margin, and otherwise
// writes -1: the row's cut is a matter of rounding, and only the host's own order decides it.
#include <cstring>

#include "../../core/softmax_draw.h"
#include "common.cuh"
#include "kernels.h"

namespace FALCON_CUDA_NS {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 1024;  // ids per chunk of weights
static_assert(kDrawMaxIds % kChunk == 0, "whole chunks");
constexpr int kMaxChunks = int(kDrawMaxIds / kChunk);
// The radix select reads a positive double's 63 bits below its sign as 6 digits, high first: five of
// kDigitBits bits and a last one of 8.
constexpr int kDigits = 6;
constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;

// A positive double's bits order as the doubles do.
__device__ __forceinline__ uint64_t key_of(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

__device__ __forceinline__ double double_of(uint64_t bits) {
  double x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// The block's scratch for sums in id order.
struct IdOrderScratch {
  SharedArray<double, 2 * kChunk>& weights;      // two chunks: one summed while the next is computed
  SharedArray<double, kMaxChunks>& chunk_sums;   // the running sum at each chunk's end
  SharedArray<int32_t, kWarps>& warp_ints;
  SharedArray<int32_t, 1>& landing_chunk;
  SharedArray<double, 1>& total;
};

// Chunk `c`'s weights (ids [c · kChunk, min(n, (c + 1) · kChunk))) into weights[(c % 2) · kChunk ..],
// computed by the threads from `first_thread` on.
template <typename WeightOf>
__device__ void fill_chunk(const WeightOf& weight_of, int64_t n, int64_t c, int first_thread, const IdOrderScratch& s) {
  const int64_t begin = c * kChunk;
  const int64_t end = begin + kChunk < n ? begin + kChunk : n;
  const int base = int(c % 2) * kChunk;
  for (int64_t id = begin + int(threadIdx.x) - first_thread; id < end; id += kThreads - first_thread) {
    s.weights[base + int(id - begin)] = weight_of(id);
  }
}

// On lane 0 of warp 0: adds chunk `c`'s weights to `running` in id order; with `find`, returns the
// first id whose running sum passes `target` (pick's test), else -1.
__device__ int32_t sum_chunk(int64_t n, int64_t c, double& running, bool find, double target, const IdOrderScratch& s) {
  const int64_t begin = c * kChunk;
  const int count = int((begin + kChunk < n ? begin + kChunk : n) - begin);
  const int base = int(c % 2) * kChunk;
  for (int j = 0; j < count; ++j) {
    running += s.weights[base + j];
    if (find && target < running) return int32_t(begin + j);
  }
  return -1;
}

// Σ weight_of(id) over [0, n), added in id order as the host adds it; every thread gets it. The
// running sum at each chunk's end stays in chunk_sums.
template <typename WeightOf>
__device__ double sum_in_id_order(const WeightOf& weight_of, int64_t n, const IdOrderScratch& s) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  fill_chunk(weight_of, n, 0, 0, s);
  __syncthreads();
  double running = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    if (warp == 0) {
      if (lane == 0) {
        sum_chunk(n, c, running, false, 0.0, s);
        s.chunk_sums[int(c)] = running;
      }
    } else if (c + 1 < chunks) {
      fill_chunk(weight_of, n, c + 1, 32, s);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) s.total[0] = running;
  __syncthreads();
  return s.total[0];
}

// pick() over weight_of on [0, n): the first id whose running sum (in id order) passes draw · total,
// or, when none does, the largest id with a positive weight (0 when there is none). On thread 0.
template <typename WeightOf>
__device__ int32_t pick_in_id_order(const WeightOf& weight_of, int64_t n, double draw, const IdOrderScratch& s) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const double target = draw * sum_in_id_order(weight_of, n, s);
  if (threadIdx.x == 0) {
    int32_t landing = -1;
    for (int64_t c = 0; c < chunks && landing < 0; ++c) {
      if (target < s.chunk_sums[int(c)]) landing = int32_t(c);
    }
    s.landing_chunk[0] = landing;
  }
  __syncthreads();
  const int32_t landing = s.landing_chunk[0];
  if (landing >= 0) {
    fill_chunk(weight_of, n, landing, 0, s);
    __syncthreads();
    if (threadIdx.x != 0) return 0;
    double running = landing == 0 ? 0.0 : s.chunk_sums[landing - 1];
    // The same additions again pass the target where the chunk's end did.
    return sum_chunk(n, landing, running, true, target, s);
  }
  // No running sum passes the target (a draw that rounds up to the total).
  int32_t last_positive = -1;
  for (int64_t id = threadIdx.x; id < n; id += kThreads) {
    if (weight_of(id) > 0) last_positive = int32_t(id);
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const int32_t other = __shfl_xor_sync(kFullMask, last_positive, offset);
    if (other > last_positive) last_positive = other;
  }
  if (threadIdx.x % 32 == 0) s.warp_ints[int(threadIdx.x) / 32] = last_positive;
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) last_positive = s.warp_ints[w] > last_positive ? s.warp_ints[w] : last_positive;
  return last_positive < 0 ? 0 : last_positive;
}

// Where the nucleus of mass p ends: every probability above `threshold`, and the first `taken_ties`
// of those equal to it, up to id `last_tied`. `decided` is false when the cut lies within rounding of p.
struct NucleusCut {
  double threshold;
  int32_t taken_ties;
  int64_t last_tied;
  bool decided;
};

// The block's scratch for the cut.
struct NucleusScratch {
  SharedArray<double, kBins>& bin_mass;
  SharedArray<NucleusCut, 1>& cut;
  SharedArray<uint64_t, 1>& prefix;
  SharedArray<double, 1>& mass_above;
  SharedArray<int32_t, 3>& counts;  // above the threshold, equal to it, positive below it
  SharedArray<int32_t, kWarps>& warp_ints;
};

// The nucleus of mass p in (0, 1) over probability_of on [0, n) (each in [0, 1]; at least one
// positive): the host's selectNucleus cut wherever rounding cannot move it. Every thread gets it.
template <typename ProbabilityOf>
__device__ NucleusCut cut_nucleus(const ProbabilityOf& probability_of, int64_t n, double p, const NucleusScratch& s) {
  // The threshold is the largest probability t with mass(≥ t) ≥ p, found digit by digit: each pass
  // sums the mass of each next digit among the keys that share the digits found so far, and keeps the
  // highest digit whose mass takes the sum (from the keys above) to p, or the lowest one present when
  // none does (then the nucleus may be every id).
  uint64_t prefix = 0, decided_bits = 0;
  double above = 0;
  int shift = 63;
  for (int d = 0; d < kDigits; ++d) {
    const int width = d + 1 < kDigits ? kDigitBits : 63 - kDigitBits * (kDigits - 1);
    const int bins = 1 << width;
    shift -= width;
    for (int b = int(threadIdx.x); b < bins; b += kThreads) s.bin_mass[b] = 0;
    __syncthreads();
    for (int64_t id = threadIdx.x; id < n; id += kThreads) {
      const double probability = probability_of(id);
      const uint64_t key = key_of(probability);
      if (probability > 0 && (key & decided_bits) == prefix) atomicAdd(&s.bin_mass[int((key >> shift) & uint64_t(bins - 1))], probability);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double sum = above, before = above;
      int chosen = -1;
      for (int b = bins - 1; b >= 0; --b) {
        const double mass = s.bin_mass[b];
        if (!(mass > 0)) continue;
        chosen = b;
        before = sum;
        sum += mass;
        if (sum >= p) break;
      }
      s.prefix[0] = prefix | (uint64_t(chosen) << shift);
      s.mass_above[0] = before;
    }
    __syncthreads();
    // Thread 0 writes these again only after the next pass's two barriers.
    prefix = s.prefix[0];
    above = s.mass_above[0];
    decided_bits |= uint64_t(bins - 1) << shift;
  }
  const double threshold = double_of(prefix);

  // The mass above the threshold, and how many probabilities lie above, at and (positive) below it.
  if (threadIdx.x == 0) {
    s.mass_above[0] = 0;
    s.counts[0] = s.counts[1] = s.counts[2] = 0;
  }
  __syncthreads();
  double mass = 0;
  int32_t higher = 0, tied = 0, lower = 0;
  for (int64_t id = threadIdx.x; id < n; id += kThreads) {
    const double probability = probability_of(id);
    if (probability > threshold) {
      mass += probability;
      ++higher;
    } else if (probability == threshold) {
      ++tied;
    } else if (probability > 0) {
      ++lower;
    }
  }
  atomicAdd(&s.mass_above[0], mass);
  atomicAdd(&s.counts[0], higher);
  atomicAdd(&s.counts[1], tied);
  atomicAdd(&s.counts[2], lower);
  __syncthreads();

  // How many of the tied ids the nucleus takes, and whether rounding could move the cut: any computed
  // sum of m positive terms is within γ_m < 1.01 · m · 2^-53 of their mass (≤ 1 + 2^-30), ours here
  // and the host's in its order; `margin` covers both, and this check's own few roundings.
  if (threadIdx.x == 0) {
    const double a = s.mass_above[0];
    const int32_t ties = s.counts[1];
    const double margin = double(4 * n + 16) * 0x1p-53;
    int64_t taken = ties;
    bool decided;
    if (a + double(ties) * threshold < p) {
      // Everything down to the threshold does not reach p: the nucleus is every id if the threshold is
      // the smallest probability and no order of summation reaches p.
      decided = s.counts[2] == 0 && a + double(ties) * threshold <= p - margin;
    } else {
      double needed = ceil((p - a) / threshold);
      needed = needed < 1 ? 1 : needed > double(ties) ? double(ties) : needed;
      taken = int64_t(needed);
      decided = a + double(taken - 1) * threshold <= p - margin && a + double(taken) * threshold >= p + margin;
    }
    s.cut[0] = NucleusCut{threshold, int32_t(taken), taken == ties ? n : -1, decided};
  }
  __syncthreads();
  NucleusCut cut = s.cut[0];
  if (cut.decided && cut.last_tied < 0) {
    // The taken-th tied id in id order: chunks of kThreads ids, ranked by ballots.
    const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
    int32_t remaining = cut.taken_ties;
    for (int64_t begin = 0; begin < n && remaining > 0; begin += kThreads) {
      const int64_t id = begin + threadIdx.x;
      const bool is_tied = id < n && probability_of(id) == threshold;
      const unsigned ballot = __ballot_sync(kFullMask, is_tied);
      if (lane == 0) s.warp_ints[warp] = __popc(ballot);
      __syncthreads();
      int32_t rank = __popc(ballot & ((1u << lane) - 1u)) + 1, in_chunk = 0;
      for (int w = 0; w < kWarps; ++w) {
        if (w < warp) rank += s.warp_ints[w];
        in_chunk += s.warp_ints[w];
      }
      if (is_tied && rank == remaining) s.cut[0].last_tied = id;
      remaining -= in_chunk;
      __syncthreads();
    }
    cut = s.cut[0];
    // Counted ties are found ties; if not, the cut is not known, and the host makes it.
    if (cut.last_tied < 0) cut.decided = false;
  }
  return cut;
}

__global__ void __launch_bounds__(kThreads)
    draw_tokens_kernel(const float* logits, int64_t vocab, const int32_t* rows, const int32_t* allowed, const double* temperatures,
                       const double* top_ps, const double* draws, int32_t* tokens_out) {
  __shared__ SharedArray<double, 2 * kChunk> weights;
  __shared__ SharedArray<double, kMaxChunks> chunk_sums;
  __shared__ SharedArray<double, kBins> bin_mass;
  __shared__ SharedArray<float, kWarps> warp_max;
  __shared__ SharedArray<int32_t, kWarps> warp_ints;
  __shared__ SharedArray<int32_t, 1> landing_chunk;
  __shared__ SharedArray<double, 1> total;
  __shared__ SharedArray<NucleusCut, 1> cut;
  __shared__ SharedArray<uint64_t, 1> prefix;
  __shared__ SharedArray<double, 1> mass_above;
  __shared__ SharedArray<int32_t, 3> counts;
  const IdOrderScratch id_order{weights, chunk_sums, warp_ints, landing_chunk, total};
  const int64_t i = blockIdx.x;
  // The launcher's preconditions, clamped so that a wrong table reads nothing outside the row.
  int64_t n = allowed[i];
  if (n > vocab) n = vocab;
  if (n > kDrawMaxIds) n = kDrawMaxIds;
  if (n < 1) n = 1;
  const float* row = logits + int64_t(rows[i]) * vocab;
  const double temperature = temperatures[i];
  const double top_p = top_ps[i];

  // The largest logit; NaN never compares larger, so it counts as -Infinity.
  float max = -__int_as_float(0x7f800000);
  for (int64_t id = threadIdx.x; id < n; id += kThreads) {
    const float value = row[id];
    if (value > max) max = value;
  }
  max = block_reduce(max, true, warp_max);
  if (max == -__int_as_float(0x7f800000)) {
    // No logit above -Infinity: the sampler gives id 0 all the mass.
    if (threadIdx.x == 0) tokens_out[i] = 0;
    return;
  }
  const auto weight_of = [&](int64_t id) { return falcon::softmax_draw::draw_weight(row[id], max, temperature); };
  if (!(top_p > 0 && top_p < 1)) {
    const int32_t token = pick_in_id_order(weight_of, n, draws[i], id_order);
    if (threadIdx.x == 0) tokens_out[i] = token;
    return;
  }

  // selectNucleus, then sampleTopP: the nucleus's probabilities, in id order.
  const double softmax_total = sum_in_id_order(weight_of, n, id_order);
  const auto probability_of = [&](int64_t id) { return weight_of(id) / softmax_total; };
  const NucleusCut nucleus = cut_nucleus(probability_of, n, top_p, NucleusScratch{bin_mass, cut, prefix, mass_above, counts, warp_ints});
  if (!nucleus.decided) {
    if (threadIdx.x == 0) tokens_out[i] = -1;
    return;
  }
  const auto kept_probability = [&](int64_t id) {
    const double probability = probability_of(id);
    const bool kept = probability > nucleus.threshold || (probability == nucleus.threshold && id <= nucleus.last_tied);
    return kept ? probability : 0.0;
  };
  const int32_t token = pick_in_id_order(kept_probability, n, draws[i], id_order);
  if (threadIdx.x == 0) tokens_out[i] = token;
}

}  // namespace

void draw_tokens(const float* logits, int64_t vocab, const int32_t* rows, const int32_t* allowed, const double* temperatures,
                 const double* top_ps, const double* draws, int64_t count, int32_t* tokens_out, cudaStream_t stream) {
  require_sizes(vocab > 0 && vocab <= 2147483647, "draw_tokens", "vocab must be in [1, 2^31 - 1]");
  require_sizes(count >= 0, "draw_tokens", "the row count must be non-negative");
  if (count == 0) return;
  const auto kernel = &draw_tokens_kernel;
  FALCON_LAUNCH("draw_tokens", kernel, dim3(grid_blocks(count, 1, "draw_tokens")), dim3(kThreads), stream, logits, vocab, rows, allowed,
                temperatures, top_ps, draws, tokens_out);
}

}  // namespace FALCON_CUDA_NS
