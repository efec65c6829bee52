#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "model_config.h"
#include "weights.h"

namespace falcon {

// The weights of one Falcon model, in the model dtype, addressed by canonical names:
//   token_embedding, lm_head (untied only), final_norm.{gamma,beta},
//   layers.N.{attn_norm,mlp_norm}.{gamma,beta}, layers.N.{qkv,attn_out,ffn_up,ffn_down}.{weight,bias}
// Vectors count as [n, 1] so biases can be assembled from parts (e.g. keras' separate q/k/v biases).
class Model {
 public:
  explicit Model(const ModelConfig& config);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }

  // Throws Error(Weights) unless rows [row_offset, row_offset + rows) of `name` exist, have `cols`
  // columns and are not yet set: what set_weight checks, for callers that read the source in parts.
  void check_weight_target(const std::string& name, int64_t row_offset, int64_t rows, int64_t cols);
  // Copies `source` into rows [row_offset, row_offset + source.rows) of weight `name`, casting to the model dtype.
  void set_weight(const std::string& name, int64_t row_offset, const TensorSource& source);
  // The whole weight as row-major bytes: matrices in the model dtype (int8 ones dequantised to
  // float32), vectors as float32. Returns its dtype and shape.
  TrackedVector<uint8_t> read_weight(const std::string& name, DType* dtype, int64_t* rows, int64_t* cols);
  // Fills every weight with a seeded initialisation (matrices N(0, 0.02), gammas 1, betas and biases 0).
  void initialize_random(uint64_t seed);
  // Throws Error(Weights) listing the weights (and row ranges) never set.
  void require_complete() const;
  // Frees the host copy of every matrix once a device backend holds its own (Backend::prepare_weights):
  // a model's weights are in memory once. `device` names where they went, for read_weight's error.
  void release_host_matrices(const std::string& device);

  std::vector<std::string> weight_names() const;
  int64_t parameter_count() const;
  size_t weight_bytes() const;

  const WeightMatrix& token_embedding() const { return token_embedding_; }
  const WeightMatrix& head() const { return config_.tied_head ? token_embedding_ : lm_head_; }
  const WeightVector& final_norm_gamma() const { return final_norm_gamma_; }
  const WeightVector& final_norm_beta() const { return final_norm_beta_; }
  const LayerWeights& layer(int64_t index) const { return layers_[size_t(index)]; }
  // ALiBi slope per attention head (empty for rotary models).
  const std::vector<float>& alibi_slopes() const { return alibi_slopes_; }

 private:
  struct Slot {
    WeightMatrix* matrix = nullptr;
    WeightVector* vector = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
    TrackedVector<uint8_t> row_written;
    int64_t rows_written = 0;
  };

  void add_matrix(const std::string& name, WeightMatrix* target, int64_t rows, int64_t cols);
  void add_vector(const std::string& name, WeightVector* target, int64_t size);
  Slot& slot(const std::string& name);
  // check_weight_target with the slots lock held.
  Slot& target_slot(const std::string& name, int64_t row_offset, int64_t rows, int64_t cols);

  ModelConfig config_;
  WeightMatrix token_embedding_;
  WeightMatrix lm_head_;
  WeightVector final_norm_gamma_, final_norm_beta_;
  std::vector<LayerWeights> layers_;
  std::vector<float> alibi_slopes_;
  std::map<std::string, Slot> slots_;
  std::string matrices_moved_to_;  // empty while the host holds the matrices
  std::mutex slots_mutex_;  // set_weight may be called from several loader threads
};

// The bytes a Model of `config` allocates (weights and bookkeeping), overflow-checked.
ByteCount model_memory_bytes(const ModelConfig& config);

// Slopes of keras-hub / HF Falcon ALiBi (spec §2.4), including non-power-of-two head counts.
std::vector<float> compute_alibi_slopes(int64_t num_heads);

}  // namespace falcon
