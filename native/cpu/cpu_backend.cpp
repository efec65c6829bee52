#include <algorithm>
#include <vector>

#include "../core/backend.h"
#include "ops.h"

namespace falcon {
namespace {

using cpu::AttentionBatch;

// Activations for `rows` tokens, grown on demand and then reused by every later call on the same cache.
struct CpuWorkspace : BackendWorkspace {
  TrackedVector<float> residual, qkv, attention, ffn_hidden;
  TrackedVector<float> rotary_cos, rotary_sin;
  TrackedVector<int32_t> positions;
  // Matmul inputs: the attention norm's output (also the MLP's in one-norm blocks), the MLP norm's,
  // the attention output, and the MLP's hidden activations.
  cpu::PackedActivations attention_input, mlp_input, attention_output, ffn_activations;

  void reserve(const ModelConfig& config, int64_t rows) {
    auto grow = [](TrackedVector<float>& buffer, int64_t size) {
      if (buffer.size() < size_t(size)) buffer.resize(size_t(size));
    };
    const int64_t D = config.hidden_dim;
    grow(residual, rows * D);
    grow(qkv, rows * config.qkv_rows());
    grow(attention, rows * D);
    grow(ffn_hidden, rows * config.ffn_dim);
    grow(rotary_cos, rows * config.head_dim() / 2);
    grow(rotary_sin, rows * config.head_dim() / 2);
    if (positions.size() < size_t(rows)) positions.resize(size_t(rows));
  }
};

const float* optional(const WeightVector& vector) { return vector.empty() ? nullptr : vector.data(); }

// Records validity and positions of the new tokens in each sequence. Without explicit ids a token's
// position is the number of real tokens before it (cumsum(mask) − 1 over the whole history), and
// padding sits at 0, as keras-hub's ALiBi and HF generation's position_ids do.
void record_positions(const ForwardRequest& request, TrackedVector<int32_t>& positions) {
  for (int64_t b = 0; b < request.batch; ++b) {
    SequenceKv& seq = *request.sequences[size_t(b)];
    const int64_t start = request.start[size_t(b)];
    int32_t real_before = int32_t(std::count(seq.valid.begin(), seq.valid.begin() + start, uint8_t(1)));
    for (int64_t t = 0; t < request.length; ++t) {
      const size_t at = size_t(b * request.length + t);
      const uint8_t is_real = request.padding_mask == nullptr ? 1 : request.padding_mask[at];
      int32_t position = 0;
      if (request.position_ids != nullptr) {
        position = request.position_ids[at];
      } else if (is_real) {
        position = real_before++;
      }
      seq.valid[size_t(start + t)] = is_real;
      seq.position[size_t(start + t)] = position;
      positions[at] = position;
    }
  }
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  void project_logits(const Model& model, const float* hidden, int64_t rows, float* logits_out) override {
    cpu::linear(hidden, rows, model.head(), nullptr, logits_out);
  }

 protected:
  void run_forward(const Model& model, const ForwardRequest& request, std::unique_ptr<BackendWorkspace>& workspace_slot,
                   float* hidden_out) override {
    const ModelConfig& config = model.config();
    if (!workspace_slot) workspace_slot = std::make_unique<CpuWorkspace>();
    CpuWorkspace& ws = static_cast<CpuWorkspace&>(*workspace_slot);
    const int64_t rows = request.batch * request.length;
    const int64_t D = config.hidden_dim;
    const int64_t qkv_cols = config.qkv_rows();
    ws.reserve(config, rows);

    record_positions(request, ws.positions);
    const bool rotary = config.position_encoding == PositionEncoding::Rotary;
    if (rotary) {
      int64_t longest = 0;
      for (int64_t b = 0; b < request.batch; ++b) longest = std::max(longest, request.start[size_t(b)] + request.length);
      cpu::rotary_tables(config, ws.positions.data(), rows, longest, ws.rotary_cos.data(), ws.rotary_sin.data());
    }

    float* x = ws.residual.data();
    cpu::embedding(model.token_embedding(), request.token_ids, rows, x);
    const AttentionBatch attention_batch{request.batch, request.length, &request.sequences, &request.start};

    const DType dtype = config.dtype;
    for (int64_t l = 0; l < config.num_layers; ++l) {
      const LayerWeights& w = model.layer(l);
      const cpu::LayerNormParams attn_norm{w.attn_norm_gamma.data(), w.attn_norm_beta.data(), config.layer_norm_epsilon};
      const cpu::LayerNormParams mlp_norm{w.mlp_norm_gamma.data(), w.mlp_norm_beta.data(), config.layer_norm_epsilon};
      cpu::pack_activations(x, rows, D, dtype, &attn_norm, ws.attention_input);
      // Parallel blocks read both norms from the block's input, before the residual adds change it.
      if (config.block_layout == BlockLayout::ParallelTwoNorms) cpu::pack_activations(x, rows, D, dtype, &mlp_norm, ws.mlp_input);
      cpu::matmul(ws.attention_input, w.qkv, {optional(w.qkv_bias), false, false}, ws.qkv.data());

      cpu::write_cache(config, l, attention_batch, ws.qkv.data(), qkv_cols, rotary ? ws.rotary_cos.data() : nullptr,
                       rotary ? ws.rotary_sin.data() : nullptr);
      cpu::attention(config, l, attention_batch, ws.qkv.data(), qkv_cols, model.alibi_slopes(), ws.attention.data());
      cpu::pack_activations(ws.attention.data(), rows, D, dtype, nullptr, ws.attention_output);
      // The residual adds happen in the matmuls' epilogues: x += attention projection, x += MLP output.
      cpu::matmul(ws.attention_output, w.attn_out, {optional(w.attn_out_bias), false, true}, x);

      const cpu::PackedActivations* mlp_input = &ws.attention_input;
      if (config.block_layout == BlockLayout::Sequential) {
        cpu::pack_activations(x, rows, D, dtype, &mlp_norm, ws.mlp_input);
        mlp_input = &ws.mlp_input;
      } else if (config.block_layout == BlockLayout::ParallelTwoNorms) {
        mlp_input = &ws.mlp_input;
      }
      cpu::matmul(*mlp_input, w.ffn_up, {optional(w.ffn_up_bias), true, false}, ws.ffn_hidden.data());
      cpu::pack_activations(ws.ffn_hidden.data(), rows, config.ffn_dim, dtype, nullptr, ws.ffn_activations);
      cpu::matmul(ws.ffn_activations, w.ffn_down, {optional(w.ffn_down_bias), false, true}, x);
    }
    const cpu::LayerNormParams final_norm{model.final_norm_gamma().data(), model.final_norm_beta().data(),
                                          config.layer_norm_epsilon};
    cpu::layer_norm(x, rows, D, final_norm, hidden_out);
  }

  void run_embed(const Model& model, const int32_t* token_ids, int64_t count, float* out) override {
    cpu::embedding(model.token_embedding(), token_ids, count, out);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace falcon
