#include <algorithm>
#include <cstring>
#include <vector>

#include "../core/backend.h"
#include "ops.h"

namespace falcon {
namespace {

// Activations for `rows` tokens, grown on demand and then reused by every later step on the same
// workspace (a cache's, or a step runner's).
struct CpuWorkspace : BackendWorkspace {
  TrackedVector<float> residual, qkv, attention, ffn_hidden;
  TrackedVector<float> rotary_cos, rotary_sin;
  // Every sequence's valid flags and positions of slots [0, start + count), end to end.
  TrackedVector<uint8_t> history_valid;
  TrackedVector<int32_t> history_positions;
  cpu::StepPlan plan;
  // Matmul inputs: the attention norm's output (also the MLP's in one-norm blocks), the MLP norm's,
  // the attention output, and the MLP's hidden activations.
  cpu::PackedActivations attention_input, mlp_input, attention_output, ffn_activations;

  // The last layer's residual stream and attention output for the output rows alone, and their indices 0, 1, ...
  TrackedVector<float> narrow_residual, narrow_attention;
  TrackedVector<int64_t> narrow_rows;

  // Copies the output rows of the residual stream and the attention output into the narrow buffers.
  void narrow(const ModelConfig& config, const int64_t* output_rows, int64_t outputs) {
    const size_t D = size_t(config.hidden_dim);
    narrow_residual.resize(size_t(outputs) * D);
    narrow_attention.resize(size_t(outputs) * D);
    narrow_rows.resize(size_t(outputs));
    for (int64_t i = 0; i < outputs; ++i) {
      std::copy_n(residual.data() + size_t(output_rows[i]) * D, D, narrow_residual.data() + size_t(i) * D);
      std::copy_n(attention.data() + size_t(output_rows[i]) * D, D, narrow_attention.data() + size_t(i) * D);
      narrow_rows[size_t(i)] = i;
    }
  }

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
  }
};

const float* optional(const WeightVector& vector) { return vector.empty() ? nullptr : vector.data(); }

// Lays out what attention reads of every sequence: its slots' flags and positions gathered end to end
// (Backend::step has recorded the new ones in the pool), and where each row is stored.
void plan_step(const ModelConfig& config, const KvPool& pool, const StepBatch& batch, CpuWorkspace& ws) {
  cpu::StepPlan& plan = ws.plan;
  const size_t rows = size_t(batch.token_count());
  plan.sequences.resize(batch.sequences.size());
  plan.row_blocks.resize(rows);
  plan.row_slots.resize(rows);
  plan.row_is_output.assign(rows, 0);
  for (const int64_t output : batch.output_rows) plan.row_is_output[size_t(output)] = 1;
  size_t history = 0;
  for (const StepSequence& seq : batch.sequences) history += size_t(seq.start + seq.count);
  if (ws.history_valid.size() < history) {
    ws.history_valid.resize(history);
    ws.history_positions.resize(history);
  }
  int64_t row = 0;
  size_t offset = 0;
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const StepSequence& seq = batch.sequences[i];
    for (int64_t t = 0; t < seq.count; ++t) {
      const int64_t slot = seq.start + t;
      const int32_t block = seq.block_table[slot / kKvBlockTokens];
      const int32_t in_block = int32_t(slot % kKvBlockTokens);
      plan.row_blocks[size_t(row + t)] = block;
      plan.row_slots[size_t(row + t)] = in_block;
    }
    const int64_t end = seq.start + seq.count;
    uint8_t* valid = ws.history_valid.data() + offset;
    int32_t* positions = ws.history_positions.data() + offset;
    for (int64_t first = 0; first < end; first += kKvBlockTokens) {
      const int32_t block = seq.block_table[first / kKvBlockTokens];
      const size_t slots = size_t(std::min(kKvBlockTokens, end - first));
      std::memcpy(valid + first, pool.valid(block), slots);
      std::memcpy(positions + first, pool.positions(block), slots * sizeof(int32_t));
    }
    plan.sequences[i] = cpu::PagedSequence{seq.block_table, seq.start, seq.count, row, valid, positions};
    row += seq.count;
    offset += size_t(end);
  }
  cpu::plan_attention(config, plan);
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  std::string device() const override { return "cpu"; }
  // The model's panels are this backend's layout: nothing to do.
  std::shared_ptr<WeightSink> weight_sink() override { return nullptr; }
  void prepare_weights(Model&) override {}
  std::unique_ptr<KvStorage> allocate_kv(size_t bytes, int64_t) override { return make_host_kv_storage(bytes); }
  bool kv_on_host() const override { return true; }
  uint64_t memory_available() override { return available_memory_bytes(); }

  void project_logits(const Model& model, const float* hidden, int64_t rows, float* logits_out) override {
    cpu::linear(hidden, rows, model.head(), nullptr, logits_out);
  }

 protected:
  void run_step(const Model& model, KvPool& pool, const StepBatch& batch, std::unique_ptr<BackendWorkspace>& workspace_slot,
                float* hidden_out) override {
    const ModelConfig& config = model.config();
    if (!workspace_slot) workspace_slot = std::make_unique<CpuWorkspace>();
    CpuWorkspace& ws = static_cast<CpuWorkspace&>(*workspace_slot);
    const int64_t rows = batch.token_count();
    const int64_t D = config.hidden_dim;
    const int64_t qkv_cols = config.qkv_rows();
    ws.reserve(config, rows);
    plan_step(config, pool, batch, ws);

    const bool rotary = config.position_encoding == PositionEncoding::Rotary;
    if (rotary) {
      const int64_t half = config.head_dim() / 2;
      // Per sequence: dynamic NTK scales to the sequence's own rope_length.
      for (size_t i = 0; i < batch.sequences.size(); ++i) {
        const int64_t first_row = ws.plan.sequences[i].first_row;
        cpu::rotary_tables(config, batch.positions.data() + first_row, batch.sequences[i].count, batch.sequences[i].rope_length,
                           ws.rotary_cos.data() + first_row * half, ws.rotary_sin.data() + first_row * half);
      }
    }

    cpu::embedding(model.token_embedding(), batch.token_ids.data(), rows, ws.residual.data());

    // Once the last layer has written every token's keys and values, only the output rows matter:
    // when they are fewer than the step's rows, the rest of that layer runs on them alone. Each row's
    // arithmetic is its own, so they get the same bits either way.
    const int64_t outputs = int64_t(batch.output_rows.size());
    const bool narrow_last_layer = outputs < rows;
    float* x = ws.residual.data();
    float* attention_out = ws.attention.data();
    int64_t active_rows = rows;
    const DType dtype = config.dtype;
    for (int64_t l = 0; l < config.num_layers; ++l) {
      const LayerWeights& w = model.layer(l);
      const cpu::LayerNormParams attn_norm{w.attn_norm_gamma.data(), w.attn_norm_beta.data(), config.layer_norm_epsilon};
      const cpu::LayerNormParams mlp_norm{w.mlp_norm_gamma.data(), w.mlp_norm_beta.data(), config.layer_norm_epsilon};
      cpu::pack_activations(x, rows, D, dtype, &attn_norm, ws.attention_input);
      // Parallel blocks read both norms from the block's input, before the residual adds change it.
      if (config.block_layout == BlockLayout::ParallelTwoNorms) cpu::pack_activations(x, rows, D, dtype, &mlp_norm, ws.mlp_input);
      cpu::matmul(ws.attention_input, w.qkv, {optional(w.qkv_bias), false, false}, ws.qkv.data());

      cpu::write_cache(config, l, pool, ws.plan, rows, ws.qkv.data(), qkv_cols, rotary ? ws.rotary_cos.data() : nullptr,
                       rotary ? ws.rotary_sin.data() : nullptr);
      if (l + 1 == config.num_layers && narrow_last_layer) {
        cpu::attention(config, l, pool, ws.plan, ws.plan.output_attention_items, ws.qkv.data(), qkv_cols, model.alibi_slopes(),
                       ws.attention.data());
        // The residual stream and the attention output shrink to the output rows, in output order.
        ws.narrow(config, batch.output_rows.data(), outputs);
        x = ws.narrow_residual.data();
        attention_out = ws.narrow_attention.data();
        active_rows = outputs;
        if (config.block_layout == BlockLayout::ParallelOneNorm) cpu::pack_activations(x, outputs, D, dtype, &attn_norm, ws.attention_input);
        if (config.block_layout == BlockLayout::ParallelTwoNorms) cpu::pack_activations(x, outputs, D, dtype, &mlp_norm, ws.mlp_input);
      } else {
        cpu::attention(config, l, pool, ws.plan, ws.plan.attention_items, ws.qkv.data(), qkv_cols, model.alibi_slopes(),
                       ws.attention.data());
      }
      cpu::pack_activations(attention_out, active_rows, D, dtype, nullptr, ws.attention_output);
      // The residual adds happen in the matmuls' epilogues: x += attention projection, x += MLP output.
      cpu::matmul(ws.attention_output, w.attn_out, {optional(w.attn_out_bias), false, true}, x);

      const cpu::PackedActivations* mlp_input = &ws.attention_input;
      if (config.block_layout == BlockLayout::Sequential) {
        cpu::pack_activations(x, active_rows, D, dtype, &mlp_norm, ws.mlp_input);
        mlp_input = &ws.mlp_input;
      } else if (config.block_layout == BlockLayout::ParallelTwoNorms) {
        mlp_input = &ws.mlp_input;
      }
      cpu::matmul(*mlp_input, w.ffn_up, {optional(w.ffn_up_bias), true, false}, ws.ffn_hidden.data());
      cpu::pack_activations(ws.ffn_hidden.data(), active_rows, config.ffn_dim, dtype, nullptr, ws.ffn_activations);
      cpu::matmul(ws.ffn_activations, w.ffn_down, {optional(w.ffn_down_bias), false, true}, x);
    }
    const cpu::LayerNormParams final_norm{model.final_norm_gamma().data(), model.final_norm_beta().data(),
                                          config.layer_norm_epsilon};
    cpu::layer_norm(x, narrow_last_layer ? ws.narrow_rows.data() : batch.output_rows.data(), outputs, D, final_norm, hidden_out);
  }

  void run_embed(const Model& model, const int32_t* token_ids, int64_t count, float* out) override {
    cpu::embedding(model.token_embedding(), token_ids, count, out);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace falcon
