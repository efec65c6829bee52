#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <numeric>

#include "aligned_memory.h"
#include "error.h"
#include "memory.h"
#include "thread_pool.h"

namespace falcon {

void store_matrix_row(WeightMatrix& m, int64_t n, const float* values) {
  if (m.dtype == DType::Int4) {
    for (int64_t g = 0; g * kInt4Group < m.cols; ++g) {
      float block[kInt4Group] = {};
      std::copy(values + g * kInt4Group, values + std::min(m.cols, (g + 1) * kInt4Group), block);
      uint8_t q[kInt4Group];
      uint16_t scale_bits;
      quantise_int4_block(block, q, &scale_bits);
      m.set_int4_block(n, g, q, scale_bits);
    }
    return;
  }
  if (m.dtype != DType::Int8) {
    for (int64_t c = 0; c < m.cols; ++c) store_from_f32(m.data, m.dtype, m.offset(n, c), values[c]);
    return;
  }
  const float scale = int8_row_scale(values, m.cols);
  m.scales[size_t(n)] = scale;
  for (int64_t c = 0; c < m.cols; ++c) store_from_f32(m.data, DType::Int8, m.offset(n, c), std::nearbyint(values[c] / scale));
}

float int8_row_scale(const float* values, int64_t cols) {
  float largest = 0.0f;
  for (int64_t c = 0; c < cols; ++c) largest = std::max(largest, std::fabs(values[c]));
  return largest > 0.0f ? largest / 127.0f : 1.0f;
}

void quantise_int4_block(const float* x, uint8_t* q, uint16_t* scale_bits) {
  float largest_magnitude = 0.0f, largest = 0.0f;
  for (int64_t j = 0; j < kInt4Group; ++j) {
    if (largest_magnitude < std::fabs(x[j])) {
      largest_magnitude = std::fabs(x[j]);
      largest = x[j];
    }
  }
  const float scale = largest / -8;
  const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
  *scale_bits = f32_to_f16(scale);
  for (int64_t j = 0; j < kInt4Group; ++j) {
    // ggml truncates with an (int8_t) cast; from 0.5 up (where every finite x lands) that is this.
    const float shifted = x[j] * inverse + 8.5f;
    q[j] = shifted >= 15.0f ? 15 : shifted > 0.0f ? uint8_t(shifted) : 0;
  }
}

void WeightMatrix::set_int4_block(int64_t n, int64_t g, const uint8_t* q, uint16_t scale_bits) {
  uint8_t* group = int4_group(n, g);
  const int64_t o = n % kPanelWidth;
  for (int64_t j = 0; j < kInt4Group / 2; ++j) group[int4_nibble_byte(o, j)] = uint8_t(q[j] | (q[j + kInt4Group / 2] << 4));
  std::memcpy(group + kInt4NibbleBytes + size_t(o) * sizeof(uint16_t), &scale_bits, sizeof scale_bits);
}

WeightMatrix allocate_matrix(DType dtype, int64_t rows, int64_t cols) {
  WeightMatrix matrix;
  matrix.dtype = dtype;
  matrix.rows = rows;
  matrix.cols = cols;
  std::shared_ptr<void> data = allocate_streamed(matrix.byte_size());
  if (data == nullptr) throw Error(ErrorKind::Weights, "out of memory allocating a " + std::to_string(rows) + "x" +
                                                          std::to_string(cols) + " weight matrix");
  matrix.owner = data;
  matrix.data = data.get();
  if (dtype == DType::Int4) {
    // Every real row's groups are written whole at load (pad inputs quantised as zeros); rows past the
    // end get zero scales.
    const uint8_t zeros[kInt4Group] = {8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
                                       8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8};
    for (int64_t n = rows; n < matrix.panels() * kPanelWidth; ++n) {
      for (int64_t g = 0; g < matrix.stored_cols() / kInt4Group; ++g) matrix.set_int4_block(n, g, zeros, 0);
    }
    return matrix;
  }
  // The padding rows of the last panel and the pad columns (the last step of every panel, when the
  // width is not a whole number of steps) must hold zero: byte 0, or 128 for int8 (dtype.h).
  const int zero_byte = dtype == DType::Int8 ? 128 : 0;
  char* bytes = static_cast<char*>(matrix.data);
  const size_t step_bytes = size_t(matrix.k_group() * kPanelWidth) * dtype_size(dtype);
  if (matrix.stored_cols() != cols) {
    for (int64_t p = 0; p < matrix.panels(); ++p) {
      std::memset(bytes + size_t(p + 1) * matrix.panel_bytes() - step_bytes, zero_byte, step_bytes);
    }
  }
  if (rows % kPanelWidth != 0) {
    // Rows past the end sit interleaved with real ones in every step of the last panel.
    char* last_panel = bytes + size_t(matrix.panels() - 1) * matrix.panel_bytes();
    const size_t row_bytes = size_t(matrix.k_group()) * dtype_size(dtype);
    for (int64_t step = 0; step < matrix.stored_cols() / matrix.k_group(); ++step) {
      char* slots = last_panel + size_t(step) * step_bytes;
      std::memset(slots + size_t(rows % kPanelWidth) * row_bytes, zero_byte, size_t(kPanelWidth - rows % kPanelWidth) * row_bytes);
    }
  }
  if (dtype == DType::Int8) matrix.scales.assign(size_t(rows), 0.0f);
  return matrix;
}

namespace {
// A slot's name, map node and bookkeeping, roughly.
constexpr uint64_t kSlotOverheadBytes = 256;

ByteCount vector_memory_bytes(int64_t size) {
  return ByteCount(uint64_t(size)) * (sizeof(float) + 1) + kSlotOverheadBytes;
}
}  // namespace

ByteCount matrix_memory_bytes(DType dtype, int64_t rows, int64_t cols) {
  const uint64_t group = uint64_t(k_group(dtype));
  const uint64_t panels = (uint64_t(rows) + kPanelWidth - 1) / kPanelWidth;
  if (dtype == DType::Int4) {
    const uint64_t groups = (uint64_t(cols) + kInt4Group - 1) / kInt4Group;
    return ByteCount(panels) * groups * uint64_t(kInt4GroupBytes) + uint64_t(rows) + kSlotOverheadBytes;
  }
  const uint64_t stored_cols = (uint64_t(cols) + group - 1) / group * group;
  const ByteCount data = ByteCount(panels) * stored_cols * uint64_t(kPanelWidth) * dtype_size(dtype);
  const ByteCount scales = dtype == DType::Int8 ? ByteCount(uint64_t(rows)) * sizeof(float) : ByteCount(0);
  return data + scales + uint64_t(rows) + kSlotOverheadBytes;
}

ByteCount model_memory_bytes(const ModelConfig& config, bool matrices_on_host) {
  const int64_t D = config.hidden_dim, F = config.ffn_dim;
  const DType dtype = config.dtype;
  // A matrix a sink holds costs the host its slot's bookkeeping (one written flag per row) only.
  const auto matrix = [&](int64_t rows, int64_t cols) {
    return matrices_on_host ? matrix_memory_bytes(dtype, rows, cols) : ByteCount(uint64_t(rows)) + kSlotOverheadBytes;
  };
  ByteCount layer = matrix(config.qkv_rows(), D) + matrix(D, D) + matrix(F, D) + matrix(D, F) +
                    vector_memory_bytes(D) * (config.has_mlp_norm() ? 4 : 2) + sizeof(LayerWeights);
  if (config.use_bias) layer += vector_memory_bytes(config.qkv_rows()) + vector_memory_bytes(F) + vector_memory_bytes(D) * 2;
  const ByteCount embeddings = matrix(config.vocab_size, D) * (config.tied_head ? 1 : 2);
  return embeddings + vector_memory_bytes(D) * 2 + layer * uint64_t(config.num_layers);
}

float WeightMatrix::get(int64_t n, int64_t k) const {
  if (dtype == DType::Int4) {
    const uint8_t* group = int4_group(n, k / kInt4Group);
    const int64_t j = k % kInt4Group;
    const int q = (group[int4_nibble_byte(n % kPanelWidth, j % (kInt4Group / 2))] >> (j < kInt4Group / 2 ? 0 : 4)) & 15;
    uint16_t scale_bits;
    std::memcpy(&scale_bits, group + kInt4NibbleBytes + size_t(n % kPanelWidth) * sizeof(uint16_t), sizeof scale_bits);
    return float(q - 8) * f16_to_f32(scale_bits);
  }
  const float value = load_as_f32(data, dtype, offset(n, k));
  return dtype == DType::Int8 ? value * scales[size_t(n)] : value;
}

std::vector<float> compute_alibi_slopes(int64_t num_heads) {
  auto power_of_two_slopes = [](int64_t n) {
    double start = std::pow(2.0, -std::pow(2.0, -(std::log2(double(n)) - 3.0)));
    std::vector<double> slopes(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) slopes[size_t(i)] = std::pow(start, double(i + 1));
    return slopes;
  };
  int64_t closest = int64_t(1) << int64_t(std::floor(std::log2(double(num_heads))));
  std::vector<double> slopes = power_of_two_slopes(closest);
  if (closest != num_heads) {
    std::vector<double> doubled = power_of_two_slopes(2 * closest);
    for (int64_t i = 0; int64_t(slopes.size()) < num_heads; i += 2) slopes.push_back(doubled[size_t(i)]);
  }
  return std::vector<float>(slopes.begin(), slopes.end());
}

Model::Model(const ModelConfig& config, std::shared_ptr<WeightSink> sink) : config_(config), sink_(std::move(sink)) {
  config_.validate();
  require_memory(model_memory_bytes(config_, sink_ == nullptr), ErrorKind::Config, "a model of this configuration");
  const int64_t D = config_.hidden_dim;
  const int64_t F = config_.ffn_dim;
  const DType dtype = config_.dtype;
  // With a sink, the host keeps each matrix's shape only.
  const auto allocate = [&](int64_t rows, int64_t cols) {
    if (!sink_) return allocate_matrix(dtype, rows, cols);
    WeightMatrix shape;
    shape.dtype = dtype;
    shape.rows = rows;
    shape.cols = cols;
    return shape;
  };

  token_embedding_ = allocate(config_.vocab_size, D);
  add_matrix("token_embedding", &token_embedding_, config_.vocab_size, D);
  if (!config_.tied_head) {
    lm_head_ = allocate(config_.vocab_size, D);
    add_matrix("lm_head", &lm_head_, config_.vocab_size, D);
  }
  add_vector("final_norm.gamma", &final_norm_gamma_, D);
  add_vector("final_norm.beta", &final_norm_beta_, D);

  layers_.resize(size_t(config_.num_layers));
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    LayerWeights& layer = layers_[size_t(i)];
    const std::string prefix = "layers." + std::to_string(i) + ".";
    add_vector(prefix + "attn_norm.gamma", &layer.attn_norm_gamma, D);
    add_vector(prefix + "attn_norm.beta", &layer.attn_norm_beta, D);
    if (config_.has_mlp_norm()) {
      add_vector(prefix + "mlp_norm.gamma", &layer.mlp_norm_gamma, D);
      add_vector(prefix + "mlp_norm.beta", &layer.mlp_norm_beta, D);
    }
    layer.qkv = allocate(config_.qkv_rows(), D);
    add_matrix(prefix + "qkv.weight", &layer.qkv, config_.qkv_rows(), D);
    layer.attn_out = allocate(D, D);
    add_matrix(prefix + "attn_out.weight", &layer.attn_out, D, D);
    layer.ffn_up = allocate(F, D);
    add_matrix(prefix + "ffn_up.weight", &layer.ffn_up, F, D);
    layer.ffn_down = allocate(D, F);
    add_matrix(prefix + "ffn_down.weight", &layer.ffn_down, D, F);
    if (config_.use_bias) {
      add_vector(prefix + "qkv.bias", &layer.qkv_bias, config_.qkv_rows());
      add_vector(prefix + "attn_out.bias", &layer.attn_out_bias, D);
      add_vector(prefix + "ffn_up.bias", &layer.ffn_up_bias, F);
      add_vector(prefix + "ffn_down.bias", &layer.ffn_down_bias, D);
    }
  }
  if (config_.position_encoding == PositionEncoding::Alibi) alibi_slopes_ = compute_alibi_slopes(config_.num_heads);
}

void Model::add_matrix(const std::string& name, WeightMatrix* target, int64_t rows, int64_t cols) {
  if (sink_) sink_->add_matrix(name, config_.dtype, rows, cols);
  Slot& s = slots_[name];
  s.matrix = target;
  s.rows = rows;
  s.cols = cols;
  s.row_written.assign(size_t(rows), 0);
}

void Model::add_vector(const std::string& name, WeightVector* target, int64_t size) {
  target->assign(size_t(size), 0.0f);
  Slot& s = slots_[name];
  s.vector = target;
  s.rows = size;
  s.cols = 1;
  s.row_written.assign(size_t(size), 0);
}

Model::Slot& Model::slot(const std::string& name) {
  auto it = slots_.find(name);
  require(it != slots_.end(), ErrorKind::Weights, "this model has no weight named '" + name + "'");
  return it->second;
}

Model::Slot& Model::target_slot(const std::string& name, int64_t row_offset, int64_t rows, int64_t cols) {
  Slot& s = slot(name);
  require(cols == s.cols, ErrorKind::Weights,
          "weight '" + name + "': expected " + std::to_string(s.cols) + " columns, got " + std::to_string(cols));
  require(rows > 0 && row_offset >= 0 && row_offset <= s.rows && rows <= s.rows - row_offset, ErrorKind::Weights,
          "weight '" + name + "': rows [" + std::to_string(row_offset) + ", " + std::to_string(row_offset + rows) +
              ") fall outside its " + std::to_string(s.rows) + " rows");
  for (int64_t r = row_offset; r < row_offset + rows; ++r) {
    require(!s.row_written[size_t(r)], ErrorKind::Weights,
            "weight '" + name + "': row " + std::to_string(r) + " was already set");
  }
  return s;
}

void Model::check_weight_target(const std::string& name, int64_t row_offset, int64_t rows, int64_t cols) {
  std::lock_guard<std::mutex> lock(slots_mutex_);
  target_slot(name, row_offset, rows, cols);
}

void Model::set_weight(const std::string& name, int64_t row_offset, const TensorSource& source) {
  std::lock_guard<std::mutex> lock(slots_mutex_);
  require(source.data != nullptr, ErrorKind::Weights, "weight '" + name + "': no data");
  Slot& s = target_slot(name, row_offset, source.rows, source.cols);

  const int64_t rows = source.rows;
  const int64_t cols = source.cols;
  if (s.matrix != nullptr) {
    WeightMatrix& m = *s.matrix;
    if (sink_ && !source.input_major && source.dtype == m.dtype && !is_quantised(m.dtype)) {
      // Already the sink's encoding: the rows go as they are.
      sink_->write_rows(name, row_offset, rows, source.data, nullptr);
      for (int64_t r = row_offset; r < row_offset + rows; ++r) s.row_written[size_t(r)] = 1;
      s.rows_written += rows;
      return;
    }
    // Rows go in blocks: the block is first widened to float32 (for input-major sources, column by
    // column, so reads stay contiguous), then each row is quantised or rounded into its panel slots
    // (or encoded for the sink).
    current_thread_pool()->parallel_for(rows, kPanelWidth, [&](int64_t begin, int64_t end) {
      const int64_t count = end - begin;
      if (!sink_ && !source.input_major && source.dtype == m.dtype && !is_quantised(m.dtype)) {
        // Same dtype: move the stored bits into their panel slots without a float round trip.
        const size_t element = dtype_size(m.dtype);
        const char* rows_bytes = static_cast<const char*>(source.data) + size_t(begin) * size_t(cols) * element;
        char* dest = static_cast<char*>(m.data);
        for (int64_t r = 0; r < count; ++r) {
          const char* row = rows_bytes + size_t(r) * size_t(cols) * element;
          const int64_t n = row_offset + begin + r;
          if (element == 4) {
            for (int64_t c = 0; c < cols; ++c) std::memcpy(dest + m.offset(n, c) * 4, row + size_t(c) * 4, 4);
          } else {
            for (int64_t c = 0; c < cols; ++c) std::memcpy(dest + m.offset(n, c) * 2, row + size_t(c) * 2, 2);
          }
        }
        return;
      }
      // One panel of rows at a time, in a buffer freed with this chunk: a load leaves nothing behind.
      TrackedVector<float> block(size_t(std::min(count, kPanelWidth) * cols));
      for (int64_t first = begin; first < end; first += kPanelWidth) {
        const int64_t last = std::min(end, first + kPanelWidth);
        if (source.input_major) {
          for (int64_t c = 0; c < cols; ++c) {
            for (int64_t r = first; r < last; ++r) {
              block[size_t((r - first) * cols + c)] = load_as_f32(source.data, source.dtype, size_t(c) * size_t(rows) + size_t(r));
            }
          }
        } else {
          for (int64_t i = 0; i < (last - first) * cols; ++i) {
            block[size_t(i)] = load_as_f32(source.data, source.dtype, size_t(first * cols + i));
          }
        }
        if (sink_) {
          send_rows(name, row_offset + first, last - first, cols, block.data());
        } else {
          for (int64_t r = first; r < last; ++r) store_matrix_row(m, row_offset + r, block.data() + (r - first) * cols);
        }
      }
    });
  } else {
    // Round through the model dtype so a bfloat16 model's biases hold bfloat16 values (int8 and int4 models keep float32 vectors).
    const DType vector_dtype = is_quantised(config_.dtype) ? DType::Float32 : config_.dtype;
    uint32_t scratch = 0;
    for (int64_t r = 0; r < rows; ++r) {
      store_from_f32(&scratch, vector_dtype, 0, load_as_f32(source.data, source.dtype, size_t(r)));
      (*s.vector)[size_t(row_offset + r)] = load_as_f32(&scratch, vector_dtype, 0);
    }
  }
  for (int64_t r = row_offset; r < row_offset + rows; ++r) s.row_written[size_t(r)] = 1;
  s.rows_written += rows;
}

TrackedVector<uint8_t> Model::read_weight(const std::string& name, DType* dtype, int64_t* rows, int64_t* cols) {
  std::lock_guard<std::mutex> lock(slots_mutex_);
  Slot& s = slot(name);
  *rows = s.rows;
  *cols = s.cols;
  if (s.matrix != nullptr) {
    require(sink_ == nullptr, ErrorKind::State,
            "weight '" + name + "' lives in the backend's device memory only; load the model on device \"cpu\" to read its weights");
    const WeightMatrix& m = *s.matrix;
    *dtype = is_quantised(m.dtype) ? DType::Float32 : m.dtype;
    TrackedVector<uint8_t> bytes(size_t(m.rows) * size_t(m.cols) * dtype_size(*dtype));
    for (int64_t n = 0; n < m.rows; ++n) {
      for (int64_t k = 0; k < m.cols; ++k) {
        const size_t at = size_t(n) * size_t(m.cols) + size_t(k);
        if (is_quantised(m.dtype)) {
          store_from_f32(bytes.data(), DType::Float32, at, m.get(n, k));
        } else {
          std::memcpy(bytes.data() + at * dtype_size(m.dtype), static_cast<const char*>(m.data) + m.offset(n, k) * dtype_size(m.dtype),
                      dtype_size(m.dtype));
        }
      }
    }
    return bytes;
  }
  *dtype = DType::Float32;
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(s.vector->data());
  return TrackedVector<uint8_t>(bytes, bytes + s.vector->size() * sizeof(float));
}

namespace {

// SplitMix64: tiny, seedable and independent per stream, so initialisation does not depend on thread count.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void Model::initialize_random(uint64_t seed) {
  for (auto& [name, s] : slots_) {
    const uint64_t stream = seed ^ hash_name(name);
    if (s.matrix != nullptr) {
      WeightMatrix& m = *s.matrix;
      current_thread_pool()->parallel_for(s.rows, 16, [&](int64_t begin, int64_t end) {
        // A sink takes the chunk's rows in one write; the host panels take them row by row.
        TrackedVector<float> values(size_t(s.cols) * size_t(sink_ ? end - begin : 1));
        for (int64_t r = begin; r < end; ++r) {
          float* row = values.data() + (sink_ ? size_t(r - begin) * size_t(s.cols) : 0);
          uint64_t state = stream + uint64_t(r) * 0x632be59bd9b4e019ull;
          // A sum of four uniforms (Irwin-Hall, variance 4/12) scaled to standard deviation 0.02: close
          // enough to normal for random weights, and cheap for billions of them.
          constexpr float kScale = 0.02f * 1.7320508075688772f / 4294967296.0f;
          for (int64_t c = 0; c < s.cols; ++c) {
            const uint64_t a = splitmix64(state), b = splitmix64(state);
            row[c] = kScale * float(int64_t(a >> 32) + int64_t(a & 0xffffffffu) + int64_t(b >> 32) + int64_t(b & 0xffffffffu) -
                                    4 * int64_t(0x80000000u));
          }
          if (!sink_) store_matrix_row(m, r, row);
        }
        if (sink_) send_rows(name, begin, end - begin, s.cols, values.data());
      });
    } else {
      std::fill(s.vector->begin(), s.vector->end(), ends_with(name, ".gamma") ? 1.0f : 0.0f);
    }
    std::fill(s.row_written.begin(), s.row_written.end(), 1);
    s.rows_written = s.rows;
  }
}

void Model::require_complete() const {
  std::string missing;
  int count = 0;
  for (const auto& [name, s] : slots_) {
    if (s.rows_written == s.rows) continue;
    if (++count > 12) continue;
    int64_t first = 0;
    while (s.row_written[size_t(first)]) ++first;
    missing += "\n  " + name + (s.rows_written == 0 ? "" : " (rows from " + std::to_string(first) + " of " +
                                                              std::to_string(s.rows) + " missing)");
  }
  if (count > 12) missing += "\n  ... and " + std::to_string(count - 12) + " more";
  require(count == 0, ErrorKind::Weights, "weights were never set:" + missing);
}

void Model::send_rows(const std::string& name, int64_t first, int64_t count, int64_t cols, const float* values) {
  const DType dtype = config_.dtype;
  const size_t row_bytes = size_t(cols) * dtype_size(dtype);
  TrackedVector<uint8_t> encoded(size_t(count) * row_bytes);
  TrackedVector<float> scales(dtype == DType::Int8 ? size_t(count) : 0);
  for (int64_t r = 0; r < count; ++r) {
    const float* row = values + r * cols;
    uint8_t* out = encoded.data() + size_t(r) * row_bytes;
    if (dtype == DType::Int8) {
      const float scale = int8_row_scale(row, cols);
      scales[size_t(r)] = scale;
      for (int64_t c = 0; c < cols; ++c) out[c] = uint8_t(int8_t(std::nearbyint(row[c] / scale)));
    } else {
      for (int64_t c = 0; c < cols; ++c) store_from_f32(out, dtype, size_t(c), row[c]);
    }
  }
  sink_->write_rows(name, first, count, encoded.data(), scales.empty() ? nullptr : scales.data());
}

std::vector<std::string> Model::weight_names() const {
  std::vector<std::string> names;
  for (const auto& entry : slots_) names.push_back(entry.first);
  return names;
}

int64_t Model::parameter_count() const {
  int64_t total = 0;
  for (const auto& entry : slots_) total += entry.second.rows * entry.second.cols;
  return total;
}

size_t Model::weight_bytes() const {
  size_t total = 0;
  for (const auto& entry : slots_) {
    const Slot& s = entry.second;
    // int8 scales counted from the shape: a released matrix (release_host_matrices) has none on the host.
    total += s.matrix != nullptr ? s.matrix->byte_size() + (s.matrix->dtype == DType::Int8 ? size_t(s.matrix->rows) * sizeof(float) : 0)
                                 : s.vector->size() * sizeof(float);
  }
  return total;
}

}  // namespace falcon
