#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "kv_cache.h"
#include "model.h"

namespace falcon {

// One forward call over `batch` rows of `length` new tokens. Row b writes its keys and values into
// `sequences[b]` at slots [start[b], start[b] + length) and attends to every valid earlier slot.
struct ForwardRequest {
  int64_t batch = 0;
  int64_t length = 0;
  const int32_t* token_ids = nullptr;     // [batch, length]
  const uint8_t* padding_mask = nullptr;  // [batch, length], null = all ones
  const int32_t* position_ids = nullptr;  // [batch, length], null = derived from the padding history
  std::vector<SequenceKv*> sequences;
  std::vector<int64_t> start;
};

// Checks ids, shapes and cache bounds; throws Error(Input) naming the row and column.
void validate_request(const ModelConfig& config, const ForwardRequest& request);
// Checks that every id of a [rows, cols] block is inside the vocabulary.
void validate_token_ids(const ModelConfig& config, const int32_t* ids, int64_t rows, int64_t cols);

// The bytes one forward call allocates: its hidden-state result and activations, and with
// `temporary_cache` the KV cache a call without one uses (overflow-checked).
ByteCount forward_memory_bytes(const ModelConfig& config, int64_t batch, int64_t length, bool temporary_cache);

// Where the math runs. The CPU backend is the reference; a CUDA backend mirrors the model's weights
// on the device and implements the same calls.
// Inputs are validated here, once, so every backend receives only checked requests.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Writes the final-norm hidden states [batch, length, hidden] to `hidden_out`.
  void forward(const Model& model, const ForwardRequest& request, std::unique_ptr<BackendWorkspace>& workspace,
               float* hidden_out) {
    validate_request(model.config(), request);
    run_forward(model, request, workspace, hidden_out);
  }
  // logits[r] = hidden[r] · headᵀ for `rows` rows.
  virtual void project_logits(const Model& model, const float* hidden, int64_t rows, float* logits_out) = 0;
  // Token embedding rows as float32, [count, hidden].
  void embed(const Model& model, const int32_t* token_ids, int64_t count, float* out) {
    validate_token_ids(model.config(), token_ids, 1, count);
    run_embed(model, token_ids, count, out);
  }

 protected:
  virtual void run_forward(const Model& model, const ForwardRequest& request,
                           std::unique_ptr<BackendWorkspace>& workspace, float* hidden_out) = 0;
  virtual void run_embed(const Model& model, const int32_t* token_ids, int64_t count, float* out) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace falcon
