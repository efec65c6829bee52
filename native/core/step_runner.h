#pragma once
// The seam between the engine (scheduler, requests, sampling) and a model on a backend. The engine
// plans steps over KV block ids it manages; the runner owns the KV storage of those blocks and runs the
// steps. Tests drive the engine with a fake runner, so the scheduler's policy is tested without a model.
#include <algorithm>
#include <cstdint>
#include <memory>

#include "backend.h"
#include "model.h"
#include "step.h"

namespace falcon {

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  virtual int64_t vocab_size() const = 0;
  // KV blocks this runner stores (block ids are [0, num_blocks)).
  virtual int64_t num_blocks() const = 0;
  // Runs one step; writes logits [batch.output_rows.size(), vocab_size()] row-major to logits_out.
  virtual void run(const StepBatch& batch, float* logits_out) = 0;
  // Runs one step and returns each output row as wanted[row] asks, or whole (backend.h LogitsOutput).
  // This default returns every row whole through run().
  virtual void run_for_sampling(const StepBatch& batch, const LogitsWanted* wanted, const LogitsOutput& out) {
    run(batch, out.logits);
    std::fill(out.returned, out.returned + batch.output_rows.size(), RowReturned::Whole);
  }
};

// The bytes one KV block takes for this model (every layer, distinct KV heads, keys and values stored
// as `kv_dtype`, and each slot's valid flag and position). Throws Error(Input) for a dtype other than
// float32, bfloat16 and float16.
ByteCount kv_block_bytes(const ModelConfig& config, DType kv_dtype = DType::Float32);

// A runner over `model` on `backend` with a pool of `num_blocks` KV blocks storing keys and values as
// `kv_dtype` (core/kv_pool.h: float32 attention over keys rounded once to 16 bits, when that is asked
// for); throws Error(Input) for another dtype or when the machine does not have the memory.
std::unique_ptr<StepRunner> make_model_step_runner(std::shared_ptr<const Model> model, std::shared_ptr<Backend> backend,
                                                   int64_t num_blocks, DType kv_dtype = DType::Float32);

}  // namespace falcon
