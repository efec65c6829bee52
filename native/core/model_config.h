#pragma once
#include <cstdint>
#include <string>

#include "dtype.h"

namespace falcon {

enum class PositionEncoding { Alibi, Rotary };

enum class RopeScaling { None, Linear, Dynamic };

// How attention and MLP are arranged inside a decoder block (spec §4.3).
enum class BlockLayout {
  Sequential,        // falcon-rw: x += attn(ln1(x)); x += mlp(ln2(x))
  ParallelOneNorm,   // falcon-7b, falcon-11B: a = ln(x); x += attn(a) + mlp(a)
  ParallelTwoNorms,  // falcon-40b/180b: x += attn(ln_attn(x)) + mlp(ln_mlp(x))
};

// The superset of every Falcon variant: keras-hub's falcon-rw and all Hugging Face configurations.
struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t hidden_dim = 0;
  int64_t ffn_dim = 0;
  float layer_norm_epsilon = 1e-5f;
  PositionEncoding position_encoding = PositionEncoding::Alibi;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::None;
  double rope_scaling_factor = 1.0;
  int64_t max_position_embeddings = 2048;
  BlockLayout block_layout = BlockLayout::Sequential;
  bool use_bias = true;
  bool tied_head = true;
  DType dtype = DType::Float32;

  int64_t head_dim() const { return hidden_dim / num_heads; }
  int64_t qkv_rows() const { return (num_heads + 2 * num_kv_heads) * head_dim(); }
  bool has_mlp_norm() const { return block_layout != BlockLayout::ParallelOneNorm; }

  // Throws falcon::Error(Config) naming the first inconsistent field.
  void validate() const;
};

const char* block_layout_name(BlockLayout layout);
bool parse_block_layout(const std::string& name, BlockLayout* out);

}  // namespace falcon
