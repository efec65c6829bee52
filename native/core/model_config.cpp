#include "model_config.h"

#include "error.h"

namespace falcon {

namespace {

void require_positive(int64_t value, const char* field) {
  require(value > 0, ErrorKind::Config, std::string(field) + " must be a positive integer, got " + std::to_string(value));
}

// Every size is multiplied with others when buffers are allocated: cap them so products stay far from overflow.
void require_sane(int64_t value, const char* field) {
  require(value <= (int64_t(1) << 24), ErrorKind::Config,
          std::string(field) + " is implausibly large (" + std::to_string(value) + ")");
}

}  // namespace

void ModelConfig::validate() const {
  const std::pair<int64_t, const char*> sizes[] = {
      {vocab_size, "vocabularySize"}, {num_layers, "numLayers"}, {num_heads, "numAttentionHeads"},
      {num_kv_heads, "numKeyValueHeads"}, {hidden_dim, "hiddenDim"}, {ffn_dim, "intermediateDim"}};
  for (const auto& [value, field] : sizes) {
    require_positive(value, field);
    require_sane(value, field);
  }
  require(hidden_dim % num_heads == 0, ErrorKind::Config,
          "hiddenDim (" + std::to_string(hidden_dim) + ") must be divisible by numAttentionHeads (" +
              std::to_string(num_heads) + ")");
  require(num_heads % num_kv_heads == 0, ErrorKind::Config,
          "numAttentionHeads (" + std::to_string(num_heads) + ") must be a multiple of numKeyValueHeads (" +
              std::to_string(num_kv_heads) + ")");
  require(layer_norm_epsilon > 0, ErrorKind::Config, "layerNormEpsilon must be positive");
  require(dtype != DType::Float64, ErrorKind::Config, "float64 is a load-time source format, not a model dtype");
  if (position_encoding == PositionEncoding::Rotary) {
    require(head_dim() % 2 == 0, ErrorKind::Config, "rotary embeddings need an even head dimension");
    require(rope_theta > 0, ErrorKind::Config, "ropeTheta must be positive");
    if (rope_scaling != RopeScaling::None) {
      require(rope_scaling_factor > 1.0, ErrorKind::Config, "ropeScaling factor must be greater than 1");
    }
    require_positive(max_position_embeddings, "maxPositionEmbeddings");
  } else {
    require(rope_scaling == RopeScaling::None, ErrorKind::Config, "ropeScaling cannot be combined with ALiBi");
  }
}

const char* block_layout_name(BlockLayout layout) {
  switch (layout) {
    case BlockLayout::Sequential: return "sequential";
    case BlockLayout::ParallelOneNorm: return "parallel_one_norm";
    case BlockLayout::ParallelTwoNorms: return "parallel_two_norms";
  }
  return "unknown";
}

bool parse_block_layout(const std::string& name, BlockLayout* out) {
  if (name == "sequential") *out = BlockLayout::Sequential;
  else if (name == "parallel_one_norm") *out = BlockLayout::ParallelOneNorm;
  else if (name == "parallel_two_norms") *out = BlockLayout::ParallelTwoNorms;
  else return false;
  return true;
}

}  // namespace falcon
