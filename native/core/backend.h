#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kv_cache.h"
#include "kv_pool.h"
#include "model.h"
#include "step.h"

namespace falcon {

// One keras-hub forward call over `batch` rows of `length` new tokens. Row b writes its keys and
// values into row b of `cache` at slots [start[b], start[b] + length) and attends to every valid earlier slot.
struct ForwardRequest {
  int64_t batch = 0;
  int64_t length = 0;
  const int32_t* token_ids = nullptr;     // [batch, length]
  const uint8_t* padding_mask = nullptr;  // [batch, length], null = all ones
  const int32_t* position_ids = nullptr;  // [batch, length], null = derived from the padding history
  KvCache* cache = nullptr;
  std::vector<int64_t> start;
};

// Checks ids, shapes and cache bounds; throws Error(Input) naming the row and column.
void validate_request(const ModelConfig& config, const ForwardRequest& request);
// Checks that every id of a [rows, cols] block is inside the vocabulary.
void validate_token_ids(const ModelConfig& config, const int32_t* ids, int64_t rows, int64_t cols);
// Checks a step against the model and the pool it runs on: every count positive, token arrays sized
// to the counts, ids in the vocabulary, block tables covering the slots written, block ids inside the
// pool, no slot written twice, output rows inside the step. Throws Error(Input) naming the problem.
void validate_step(const ModelConfig& config, const KvPool& pool, const StepBatch& batch);

// The step a validated keras-hub request runs: one sequence per row on the cache's fixed block
// table. Without explicit ids a token's position is the number of real tokens before it in its row
// (cumsum(mask) − 1 over the cached history too), and padding sits at 0, as keras-hub's ALiBi and HF
// generation's position_ids do. Every token is an output row, in [batch, length] order.
StepBatch step_for_request(const ForwardRequest& request);

// Records each new token's validity and position in its pool slot (the host's copy, which later steps
// plan from and a backend's kernels read or mirror), before a backend runs the step.
void record_slots(KvPool& pool, const StepBatch& batch);

// The bytes one forward call allocates: its hidden-state result and activations, and with
// `temporary_cache` the KV cache a call without one uses (overflow-checked).
ByteCount forward_memory_bytes(const ModelConfig& config, int64_t batch, int64_t length, bool temporary_cache);

// The most candidates a backend ranks per row on its device (core/sampler.h rank_top_k's order); a
// sampler needing more gets the whole row.
constexpr int64_t kMaxRankedCandidates = 64;

// What the caller of a step needs of one output row's logits: its `candidates` best ids and their
// logits among [0, allowed), in rank_top_k's order, or with candidates 0 the whole row. A row with
// `temperature` > 0 (and candidates 0) needs only its token: the draw `draw` of
// SequenceSampler::sample_drawn over softmax(logits[0, allowed) / temperature), or over its nucleus
// of mass `top_p` (SequenceSampler::device_draw), which a backend may make on its device.
struct LogitsWanted {
  int64_t candidates = 0;  // in [0, kMaxRankedCandidates]
  int64_t allowed = 0;     // in [1, vocabulary]
  double temperature = 0;  // > 0: the token may be drawn on the device
  double top_p = 0;        // in (0, 1): top-p's nucleus; 0: the whole softmax
  double draw = 0;         // in [0, 1): the sampler's draw for this row
};

// How a backend returned one output row (LogitsOutput::returned).
enum class RowReturned : uint8_t {
  Whole = 0,   // logits [r · vocabulary ..]
  Ranked = 1,  // candidate_ids / candidate_values [r · kMaxRankedCandidates ..]
  Drawn = 2,   // drawn_tokens[r]
};

// Where a step's output rows go, each as returned[r] says. A backend may return any row whole.
struct LogitsOutput {
  float* logits = nullptr;            // [rows, vocabulary]
  int32_t* candidate_ids = nullptr;   // [rows, kMaxRankedCandidates]
  float* candidate_values = nullptr;  // [rows, kMaxRankedCandidates]
  int32_t* drawn_tokens = nullptr;    // [rows]
  RowReturned* returned = nullptr;    // [rows]
};

// Where the math runs, and what lives there: the model's weights in the layout its kernels read, KV
// storage, per-call workspaces, and the step itself. Core keeps the config, the weight registry and
// validation: inputs are validated here, once, so every backend receives only checked requests.
// The CPU backend (cpu/cpu_backend.cpp) is the reference; the CUDA backend (cuda/cuda_backend.cpp)
// implements the same calls on a GPU.
class Backend {
 public:
  virtual ~Backend() = default;
  // "cpu" or "cuda": also the name a KvStorage of this backend reports.
  virtual const char* name() const = 0;
  // The device it runs on, for people: "cpu", "cuda:0 (NVIDIA H200, 139 GiB)".
  virtual std::string device() const = 0;
  // Where the model's matrices go as they load: null for the CPU, whose kernels read the model's own
  // panels; CUDA's writes them straight to device memory. The model is built with it (Model(config, sink)).
  virtual std::shared_ptr<WeightSink> weight_sink() = 0;
  // Makes a complete model's weights ready for this backend's kernels, once, before its first call
  // (CUDA: uploads the vectors and takes the matrices its sink received).
  virtual void prepare_weights(Model& model) = 0;
  // The keys and values of one KV pool of `num_blocks` blocks (KvPool allocates through this), and
  // whether they are host memory.
  virtual std::unique_ptr<KvStorage> allocate_kv(size_t bytes, int64_t num_blocks) = 0;
  virtual bool kv_on_host() const = 0;
  // Bytes of this backend's memory (host or device) not yet in use: what an engine may size its KV pool from.
  virtual uint64_t memory_available() = 0;
  // One forward step over a ragged batch: writes each token's keys and values into `pool` and the
  // final-norm hidden states of batch.output_rows, in that order, to `hidden_out` ([outputs, hidden]).
  // A token's result depends only on its own sequence (its tokens, the pool's slots before it and its
  // rope_length): bit for bit the same whatever else the step holds and however its prompt was split.
  void step(const Model& model, KvPool& pool, const StepBatch& batch, std::unique_ptr<BackendWorkspace>& workspace,
            float* hidden_out) {
    require_own_pool(pool);
    validate_step(model.config(), pool, batch);
    record_slots(pool, batch);
    run_step(model, pool, batch, workspace, hidden_out);
  }
  // keras-hub's forward: writes the final-norm hidden states [batch, length, hidden] to `hidden_out`.
  void forward(const Model& model, const ForwardRequest& request, std::unique_ptr<BackendWorkspace>& workspace,
               float* hidden_out) {
    validate_request(model.config(), request);
    require_own_pool(request.cache->pool());
    const StepBatch batch = step_for_request(request);
    for (int64_t b = 0; b < request.batch; ++b) request.cache->zero_unwritten_before(b, request.start[size_t(b)]);
    // Valid by construction from a validated request: checked once, not again as a step.
    record_slots(request.cache->pool(), batch);
    run_step(model, request.cache->pool(), batch, workspace, hidden_out);
    for (int64_t b = 0; b < request.batch; ++b) request.cache->mark_written(b, request.start[size_t(b)] + request.length);
  }
  // logits[r] = hidden[r] · headᵀ for `rows` rows.
  virtual void project_logits(const Model& model, const float* hidden, int64_t rows, float* logits_out) = 0;
  // The same logits, returned as wanted[r] asks (LogitsOutput). This default returns every row whole,
  // as project_logits computes them: a host backend has nothing to copy, so ranking first saves nothing.
  virtual void project_logits_for_sampling(const Model& model, const float* hidden, int64_t rows, const LogitsWanted* wanted,
                                           const LogitsOutput& out) {
    project_logits(model, hidden, rows, out.logits);
    std::fill(out.returned, out.returned + rows, RowReturned::Whole);
  }
  // Token embedding rows as float32, [count, hidden].
  void embed(const Model& model, const int32_t* token_ids, int64_t count, float* out) {
    validate_token_ids(model.config(), token_ids, 1, count);
    run_embed(model, token_ids, count, out);
  }

 protected:
  // A pool is read by the kernels of the backend that allocated it, and no other.
  void require_own_pool(const KvPool& pool) const;
  virtual void run_step(const Model& model, KvPool& pool, const StepBatch& batch,
                        std::unique_ptr<BackendWorkspace>& workspace, float* hidden_out) = 0;
  virtual void run_embed(const Model& model, const int32_t* token_ids, int64_t count, float* out) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace falcon
