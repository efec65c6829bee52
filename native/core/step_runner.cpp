#include "step_runner.h"

#include "error.h"
#include "kv_pool.h"

namespace falcon {

namespace {

class ModelStepRunner final : public StepRunner {
 public:
  ModelStepRunner(std::shared_ptr<const Model> model, std::shared_ptr<Backend> backend, int64_t num_blocks, DType kv_dtype)
      : model_(std::move(model)), backend_(std::move(backend)), pool_(model_->config(), num_blocks, kv_dtype, backend_.get()) {}

  int64_t vocab_size() const override { return model_->config().vocab_size; }
  int64_t num_blocks() const override { return pool_.num_blocks(); }

  void run(const StepBatch& batch, float* logits_out) override {
    const int64_t outputs = run_hidden(batch);
    if (outputs > 0) backend_->project_logits(*model_, hidden_.data(), outputs, logits_out);
  }

  void run_for_sampling(const StepBatch& batch, const LogitsWanted* wanted, const LogitsOutput& out) override {
    const int64_t outputs = run_hidden(batch);
    if (outputs > 0) backend_->project_logits_for_sampling(*model_, hidden_.data(), outputs, wanted, out);
  }

 private:
  // Runs the step's layers; the output rows' final hidden states are in hidden_. Returns their count.
  int64_t run_hidden(const StepBatch& batch) {
    // The backend validates the rest of the step; the count the hidden states are sized from is bounded first.
    const size_t outputs = batch.output_rows.size();
    require(int64_t(outputs) <= batch.token_count(), ErrorKind::Input,
            "a step asks for more output rows than it has tokens");
    // Grown to the widest step seen, then reused: a decode step allocates nothing.
    const size_t hidden_floats = outputs * size_t(model_->config().hidden_dim);
    if (hidden_.size() < hidden_floats) hidden_.resize(hidden_floats);
    backend_->step(*model_, pool_, batch, workspace_, hidden_.data());
    return int64_t(outputs);
  }

  std::shared_ptr<const Model> model_;
  std::shared_ptr<Backend> backend_;
  KvPool pool_;
  std::unique_ptr<BackendWorkspace> workspace_;
  TrackedVector<float> hidden_;
};

}  // namespace

ByteCount kv_block_bytes(const ModelConfig& config, DType kv_dtype) { return KvPool::block_bytes(config, kv_dtype); }

std::unique_ptr<StepRunner> make_model_step_runner(std::shared_ptr<const Model> model, std::shared_ptr<Backend> backend,
                                                   int64_t num_blocks, DType kv_dtype) {
  require(model != nullptr && backend != nullptr, ErrorKind::State, "a step runner needs a model and a backend");
  return std::make_unique<ModelStepRunner>(std::move(model), std::move(backend), num_blocks, kv_dtype);
}

}  // namespace falcon
