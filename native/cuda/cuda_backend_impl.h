#pragma once
// The CUDA backend, written once over the kernel entry points of whichever build includes it
// (cuda_compat.h picks FALCON_CUDA_NS): emulated/cuda_backend.cpp over the host emulation,
// real/cuda_backend.cpp over the real kernels. It mirrors cpu/cpu_backend.cpp's layer loop op for op,
// with the same arithmetic wherever the fixtures' tolerances need it (cuda_backend.h).
//
// What lives on the device: every weight matrix (row-major, the dtype it was loaded in; int8 as signed
// bytes with a float32 scale per row; written there as it loads, never held on the host), the norm and
// bias vectors (float32), the KV pools' keys and
// values with a mirror of each slot's valid flag and position, and each workspace's activations. Only
// the step's small tables (token ids, positions, block tables) go up, and its output rows come back.
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/error.h"
#include "../core/memory.h"
#include "cuda_backend.h"
#include "cuda_compat.h"
#include "device_runtime.h"
#include "kernels/kernels.h"
#include "rotary_scaling.h"

namespace FALCON_CUDA_NS {
namespace {

using falcon::cuda::CopyKind;
using falcon::cuda::DeviceRuntime;
using falcon::cuda::DeviceStream;

// One device: its runtime, the stream all work goes to, and the lock that serialises callers (the
// engine's thread, forward calls on libuv threads): a device runs one stream's work in order anyway.
struct DeviceContext {
  explicit DeviceContext(std::unique_ptr<DeviceRuntime> device_runtime)
      : runtime(std::move(device_runtime)), stream(runtime->create_stream()) {}
  ~DeviceContext() {
    try {
      runtime->synchronize(stream);
      runtime->destroy_stream(stream);
    } catch (const Error&) {
      // A device in an error state releases its streams with its context.
    }
  }
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  cudaStream_t native() { return static_cast<cudaStream_t>(runtime->native_stream(stream)); }
  // Enqueues a host-to-device copy; `host` must stay unchanged until the stream has run it (every
  // call ends with a synchronize, and what it uploads lives in its workspace until then).
  void upload(void* device, const void* host, size_t bytes) {
    if (bytes > 0) runtime->copy(device, host, bytes, CopyKind::HostToDevice, stream);
  }

  std::unique_ptr<DeviceRuntime> runtime;
  DeviceStream* stream;
  std::mutex mutex;
};

// Device memory with one owner; it keeps its device alive.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(std::shared_ptr<DeviceContext> context, size_t bytes)
      : context_(std::move(context)), data_(context_->runtime->allocate(bytes)), bytes_(bytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      context_ = std::move(other.context_);
      data_ = other.data_;
      bytes_ = other.bytes_;
      other.data_ = nullptr;
      other.bytes_ = 0;
    }
    return *this;
  }

  template <typename T = void>
  T* get() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }

  // At least `bytes`, reallocated (contents lost) only when it grows: a decode step allocates nothing.
  // Returns whether it moved.
  bool reserve(const std::shared_ptr<DeviceContext>& context, size_t bytes) {
    if (bytes <= bytes_ && data_ != nullptr) return false;
    reset();
    *this = DeviceBuffer(context, std::max<size_t>(bytes, 1));
    return true;
  }

 private:
  void reset() {
    if (data_ == nullptr) return;
    try {
      context_->runtime->free(data_);
    } catch (const Error&) {
      // As ~DeviceContext: the memory goes with the context.
    }
    data_ = nullptr;
    bytes_ = 0;
  }

  std::shared_ptr<DeviceContext> context_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A weight matrix as the GEMM kernels read it: [rows = outputs][cols = inputs], row-major.
struct DeviceMatrix {
  Element type = Element::F32;
  int64_t rows = 0, cols = 0;
  DeviceBuffer data;
  DeviceBuffer scales;  // int8: one float32 per row
};

struct DeviceLayer {
  DeviceBuffer attn_norm_gamma, attn_norm_beta, mlp_norm_gamma, mlp_norm_beta;
  DeviceMatrix qkv, attn_out, ffn_up, ffn_down;
  DeviceBuffer qkv_bias, attn_out_bias, ffn_up_bias, ffn_down_bias;
};

struct DeviceWeights {
  DeviceMatrix token_embedding, lm_head;
  DeviceBuffer final_norm_gamma, final_norm_beta, alibi_slopes;
  std::vector<DeviceLayer> layers;
};

Element element_of(DType dtype) {
  switch (dtype) {
    case DType::Float32: return Element::F32;
    case DType::BFloat16: return Element::BF16;
    case DType::Float16: return Element::F16;
    case DType::Int8: return Element::I8;
    default: throw Error(ErrorKind::Config, std::string("the CUDA backend has no kernels for ") + dtype_name(dtype) + " weights");
  }
}

size_t element_bytes(Element type) { return type == Element::F32 ? 4 : type == Element::I8 ? 1 : 2; }

// Host-to-device uploads through two page-locked buffers: a piece of the caller's memory is copied
// into one while the device reads the other, so an upload returns once its bytes are staged, and the
// bus reads page-locked memory (at its full rate, and while the host goes on reading the file)
// instead of the driver staging pageable memory piece by piece with the host waiting. Where the host
// refuses page-locked memory, uploads are plain copies that wait for the device. The context's mutex
// is the caller's.
class PinnedStaging {
 public:
  // Half the 8 MiB blocks the loader reads (weight_file.cpp), so that a block's second half is staged
  // while its first is copied; and past the size where a copy reaches the bus's rate.
  static constexpr size_t kBufferBytes = size_t(4) << 20;

  explicit PinnedStaging(std::shared_ptr<DeviceContext> context) : context_(std::move(context)) {}
  ~PinnedStaging() {
    try {
      release();
    } catch (const Error&) {
      // A device in an error state frees page-locked memory with its context.
    }
  }
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  void upload(void* device, const void* host, size_t bytes) {
    if (bytes == 0) return;
    if (!tried_) allocate();
    DeviceRuntime& runtime = *context_->runtime;
    if (slots_[0].host == nullptr) {
      context_->upload(device, host, bytes);
      runtime.synchronize(context_->stream);  // the caller's bytes are its own again when this returns
      return;
    }
    for (size_t done = 0; done < bytes;) {
      Slot& slot = slots_[next_];
      next_ ^= 1;
      const size_t piece = std::min(kBufferBytes, bytes - done);
      if (slot.pending) runtime.synchronize(slot.drained);  // the device has read the slot's last piece
      std::memcpy(slot.host, static_cast<const unsigned char*>(host) + done, piece);
      runtime.copy(static_cast<unsigned char*>(device) + done, slot.host, piece, CopyKind::HostToDevice, context_->stream);
      runtime.record(slot.drained, context_->stream);
      slot.pending = true;
      done += piece;
    }
  }

  // Waits for the staged copies, then frees the buffers (the weights are all on the device).
  void release() {
    DeviceRuntime& runtime = *context_->runtime;
    if (!tried_) return;
    runtime.bind_thread();
    runtime.synchronize(context_->stream);
    free_slots();
    tried_ = false;
  }

 private:
  struct Slot {
    void* host = nullptr;
    DeviceEvent* drained = nullptr;  // recorded after the copy that reads `host`
    bool pending = false;
  };

  // Host memory like any other the core holds, so it is counted (core/memory.h) while it lives.
  void allocate() {
    tried_ = true;
    DeviceRuntime& runtime = *context_->runtime;
    try {
      for (Slot& slot : slots_) {
        slot.host = runtime.allocate_host(kBufferBytes);
        count_allocation(MemoryUse::Owned, kBufferBytes);
        slot.drained = runtime.create_event();
      }
    } catch (const Error&) {
      // Page-locked memory is limited (ulimit -l, containers): plain copies still work.
      free_slots();
    }
  }

  void free_slots() {
    DeviceRuntime& runtime = *context_->runtime;
    for (Slot& slot : slots_) {
      if (slot.host != nullptr) {
        runtime.free_host(slot.host);
        count_release(MemoryUse::Owned, kBufferBytes);
      }
      if (slot.drained != nullptr) runtime.destroy_event(slot.drained);
      slot = Slot{};
    }
  }

  std::shared_ptr<DeviceContext> context_;
  Slot slots_[2];
  int next_ = 0;
  bool tried_ = false;
};

// The model's matrices in device memory, allocated when the model is built and written as they load
// (core/weights.h WeightSink) through page-locked staging: the host never holds them.
class DeviceWeightStore final : public WeightSink {
 public:
  explicit DeviceWeightStore(std::shared_ptr<DeviceContext> context) : context_(context), staging_(std::move(context)) {}

  void add_matrix(const std::string& name, DType dtype, int64_t rows, int64_t cols) override {
    DeviceMatrix matrix;
    matrix.type = element_of(dtype);
    matrix.rows = rows;
    matrix.cols = cols;
    context_->runtime->bind_thread();
    matrix.data = DeviceBuffer(context_, size_t(rows) * size_t(cols) * element_bytes(matrix.type));
    if (matrix.type == Element::I8) matrix.scales = DeviceBuffer(context_, size_t(rows) * sizeof(float));
    matrices_[name] = std::move(matrix);
  }

  // Model::set_weight has checked the name and the rows; the map is not changed while rows load.
  void write_rows(const std::string& name, int64_t first, int64_t count, const void* rows, const float* scales) override {
    std::lock_guard<std::mutex> lock(context_->mutex);
    const DeviceMatrix& matrix = find(name)->second;
    const size_t row_bytes = size_t(matrix.cols) * element_bytes(matrix.type);
    context_->runtime->bind_thread();
    // The rows are the caller's again once this returns: staged, or copied.
    staging_.upload(matrix.data.get<unsigned char>() + size_t(first) * row_bytes, rows, size_t(count) * row_bytes);
    if (scales != nullptr) staging_.upload(matrix.scales.get<float>() + first, scales, size_t(count) * sizeof(float));
  }

  // Every matrix has all its rows on the device: the staging buffers go back to the host. The
  // context's mutex is the caller's.
  void finish_uploads() { staging_.release(); }

  // Hands matrix `name` to the backend's weights (prepare_weights), after finish_uploads.
  DeviceMatrix take(const std::string& name) {
    const auto found = find(name);
    DeviceMatrix matrix = std::move(found->second);
    matrices_.erase(found);
    return matrix;
  }

 private:
  std::map<std::string, DeviceMatrix>::iterator find(const std::string& name) {
    const auto found = matrices_.find(name);
    require(found != matrices_.end(), ErrorKind::State, "the device holds no weight matrix named '" + name + "'");
    return found;
  }

  std::shared_ptr<DeviceContext> context_;
  std::map<std::string, DeviceMatrix> matrices_;
  PinnedStaging staging_;
};

// The keys and values of one KV pool, and the device's copy of its slots' valid flags and positions
// (the attention kernels read them; the host's copy is what core plans steps from).
class DeviceKvStorage final : public KvStorage {
 public:
  DeviceKvStorage(std::shared_ptr<DeviceContext> context, size_t bytes, int64_t num_blocks)
      : context_(context),
        kv_(context, bytes),
        valid_(context, size_t(num_blocks) * kKvTokens),
        positions_(context, size_t(num_blocks) * kKvTokens * sizeof(int32_t)) {
    std::lock_guard<std::mutex> lock(context_->mutex);
    context_->runtime->fill_zero(valid_.get(), valid_.bytes(), context_->stream);
    context_->runtime->fill_zero(positions_.get(), positions_.bytes(), context_->stream);
    context_->runtime->synchronize(context_->stream);
  }
  const char* backend() const override { return "cuda"; }
  unsigned char* data() override { return kv_.get<unsigned char>(); }
  // Ordered on the stream before the step that follows: nothing to wait for here.
  void zero(size_t offset, size_t size) override {
    std::lock_guard<std::mutex> lock(context_->mutex);
    context_->runtime->bind_thread();
    context_->runtime->fill_zero(kv_.get<unsigned char>() + offset, size, context_->stream);
  }
  uint8_t* valid() const { return valid_.get<uint8_t>(); }
  int32_t* positions() const { return positions_.get<int32_t>(); }

 private:
  std::shared_ptr<DeviceContext> context_;
  DeviceBuffer kv_, valid_, positions_;
};

// A decode step's kernels captured as a CUDA graph, and what they were captured for: the same shapes,
// pool and workspace buffers replay it (the step's tables are uploaded into the same buffers first).
struct DecodeGraphKey {
  int64_t rows = 0, outputs = 0, max_blocks = 0, visible_splits = 0;
  const KvPool* pool = nullptr;
  uint64_t buffers_generation = 0;
  bool operator==(const DecodeGraphKey& other) const {
    return rows == other.rows && outputs == other.outputs && max_blocks == other.max_blocks && visible_splits == other.visible_splits &&
           pool == other.pool && buffers_generation == other.buffers_generation;
  }
};

class DecodeGraph {
 public:
  explicit DecodeGraph(std::shared_ptr<DeviceContext> context) : context_(std::move(context)) {}
  ~DecodeGraph() { reset(); }
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // Runs `enqueue` through the graph for `key`: replayed when it was captured for this key, else
  // captured first (a capture that fails leaves no graph behind).
  template <typename Enqueue>
  void run(const DecodeGraphKey& key, Enqueue&& enqueue) {
    DeviceRuntime& runtime = *context_->runtime;
    if (graph_ == nullptr || !(key_ == key)) {
      reset();
      runtime.begin_capture(context_->stream);
      try {
        enqueue();
      } catch (...) {
        try {
          runtime.destroy_graph(runtime.end_capture(context_->stream));
        } catch (const Error&) {
          // The capture is already broken; the kernel's own error is the one to report.
        }
        throw;
      }
      graph_ = runtime.end_capture(context_->stream);
      key_ = key;
    }
    runtime.launch_graph(graph_, context_->stream);
  }

 private:
  void reset() {
    if (graph_ == nullptr) return;
    try {
      context_->runtime->destroy_graph(graph_);
    } catch (const Error&) {
      // As DeviceBuffer: it goes with the context.
    }
    graph_ = nullptr;
  }

  std::shared_ptr<DeviceContext> context_;
  falcon::cuda::DeviceGraph* graph_ = nullptr;
  DecodeGraphKey key_;
};

// One cache's or step runner's device activations and step tables, grown to the widest step seen.
struct CudaWorkspace final : BackendWorkspace {
  explicit CudaWorkspace(std::shared_ptr<DeviceContext> context) : decode_graph(std::move(context)) {}

  // Activations: the residual stream, the two norms' outputs, QKV, attention output, MLP hidden,
  // a GEMM input staged in 16 bits (the tensor-core GEMMs of bfloat16 and float16 weights), rotary
  // tables, attention partial sums, and the output rows before and after the final norm.
  DeviceBuffer residual, attn_input, mlp_input, qkv, attention, ffn_hidden, gemm_input, rotary_cos, rotary_sin;
  DeviceBuffer attention_partials, output_rows, hidden;
  // The step's tables, on the device and as they were built on the host.
  DeviceBuffer token_ids, positions, row_block, row_slot, row_valid, row_sequence, row_last_slot, block_tables;
  DeviceBuffer rotary_bases, rotary_scales;
  // Prompt tiles of up to kFlashQueries tokens of one sequence (a decode token is a tile of one).
  DeviceBuffer tile_sequence, tile_first_row, tile_first_slot, tile_count;
  std::vector<int32_t> host_row_block, host_row_slot, host_row_sequence, host_row_last_slot, host_block_tables, host_output_rows;
  std::vector<int32_t> host_tile_sequence, host_tile_first_row, host_tile_first_slot, host_tile_count;
  std::vector<double> host_rotary_bases, host_rotary_scales;
  // Counts the reallocations of the buffers above: a captured graph holds their addresses.
  uint64_t buffers_generation = 0;
  // Declared last, destroyed first: the graph refers to the buffers above.
  DecodeGraph decode_graph;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(std::unique_ptr<DeviceRuntime> runtime, std::string label)
      : context_(std::make_shared<DeviceContext>(std::move(runtime))),
        label_(std::move(label)),
        store_(std::make_shared<DeviceWeightStore>(context_)) {}

  const char* name() const override { return "cuda"; }
  std::string device() const override { return label_; }
  bool kv_on_host() const override { return false; }
  std::shared_ptr<WeightSink> weight_sink() override { return store_; }
  uint64_t memory_available() override {
    std::lock_guard<std::mutex> lock(context_->mutex);
    context_->runtime->bind_thread();
    return context_->runtime->free_bytes();
  }

  std::unique_ptr<KvStorage> allocate_kv(size_t bytes, int64_t num_blocks) override {
    context_->runtime->bind_thread();
    return std::make_unique<DeviceKvStorage>(context_, bytes, num_blocks);
  }

  // The matrices are already on the device (the store received them as they loaded): this takes them
  // and uploads the norm and bias vectors.
  void prepare_weights(Model& model) override {
    const ModelConfig& config = model.config();
    std::lock_guard<std::mutex> lock(context_->mutex);
    require(weights_ == nullptr, ErrorKind::State, "this model's weights are already on " + label_);
    context_->runtime->bind_thread();
    store_->finish_uploads();
    auto weights = std::make_unique<DeviceWeights>();
    weights->token_embedding = store_->take("token_embedding");
    if (!config.tied_head) weights->lm_head = store_->take("lm_head");
    weights->final_norm_gamma = upload_vector(model.final_norm_gamma());
    weights->final_norm_beta = upload_vector(model.final_norm_beta());
    weights->alibi_slopes = upload_vector(model.alibi_slopes());
    weights->layers.resize(size_t(config.num_layers));
    for (int64_t l = 0; l < config.num_layers; ++l) {
      const LayerWeights& w = model.layer(l);
      const std::string prefix = "layers." + std::to_string(l) + ".";
      DeviceLayer& d = weights->layers[size_t(l)];
      d.attn_norm_gamma = upload_vector(w.attn_norm_gamma);
      d.attn_norm_beta = upload_vector(w.attn_norm_beta);
      d.mlp_norm_gamma = upload_vector(w.mlp_norm_gamma);
      d.mlp_norm_beta = upload_vector(w.mlp_norm_beta);
      d.qkv = store_->take(prefix + "qkv.weight");
      d.attn_out = store_->take(prefix + "attn_out.weight");
      d.ffn_up = store_->take(prefix + "ffn_up.weight");
      d.ffn_down = store_->take(prefix + "ffn_down.weight");
      d.qkv_bias = upload_vector(w.qkv_bias);
      d.attn_out_bias = upload_vector(w.attn_out_bias);
      d.ffn_up_bias = upload_vector(w.ffn_up_bias);
      d.ffn_down_bias = upload_vector(w.ffn_down_bias);
    }
    weights_ = std::move(weights);
  }

  void project_logits(const Model& model, const float* hidden, int64_t rows, float* logits_out) override {
    std::lock_guard<std::mutex> lock(context_->mutex);
    context_->runtime->bind_thread();
    const ModelConfig& config = model.config();
    enqueue_logits(config, hidden, rows);
    download(logits_out, logits_.get(), size_t(rows * config.vocab_size) * sizeof(float));
  }

  // The logits stay on the device: rows that want candidates are ranked there (top_k) and only their
  // ids and values come back; rows whose sampler draws over the whole softmax or its nucleus are drawn
  // there (draw_tokens) and only their tokens come back; only the rows that need the whole row
  // (logprobs, returned logits, more candidates than top_k ranks, a top-p row whose cut lies within
  // rounding of p) are copied back whole.
  void project_logits_for_sampling(const Model& model, const float* hidden, int64_t rows, const LogitsWanted* wanted,
                                   const LogitsOutput& out) override {
    static_assert(kMaxRankedCandidates == kTopKMax, "the engine's candidate rows are the kernel's");
    std::lock_guard<std::mutex> lock(context_->mutex);
    context_->runtime->bind_thread();
    const ModelConfig& config = model.config();
    const int64_t vocab = config.vocab_size;
    enqueue_logits(config, hidden, rows);
    ranked_rows_.clear();
    ranked_counts_.clear();
    ranked_allowed_.clear();
    drawn_rows_.clear();
    drawn_allowed_.clear();
    drawn_temperatures_.clear();
    drawn_top_ps_.clear();
    drawn_draws_.clear();
    for (int64_t r = 0; r < rows; ++r) {
      const LogitsWanted& want = wanted[r];
      const bool valid_allowed = want.allowed >= 1 && want.allowed <= vocab;
      const bool valid_top_p = want.top_p == 0 || (want.top_p > 0 && want.top_p < 1);
      if (valid_allowed && want.candidates >= 1 && want.candidates <= kTopKMax && want.allowed >= want.candidates) {
        out.returned[r] = RowReturned::Ranked;
        ranked_rows_.push_back(int32_t(r));
        ranked_counts_.push_back(int32_t(want.candidates));
        ranked_allowed_.push_back(int32_t(want.allowed));
      } else if (valid_allowed && valid_top_p && want.candidates == 0 && want.temperature > 0 && want.allowed <= kDrawMaxIds) {
        out.returned[r] = RowReturned::Drawn;
        drawn_rows_.push_back(int32_t(r));
        drawn_allowed_.push_back(int32_t(want.allowed));
        drawn_temperatures_.push_back(want.temperature);
        drawn_top_ps_.push_back(want.top_p);
        drawn_draws_.push_back(want.draw);
      } else {
        out.returned[r] = RowReturned::Whole;
        context_->runtime->copy(out.logits + r * vocab, logits_.get<float>() + r * vocab, size_t(vocab) * sizeof(float),
                                CopyKind::DeviceToHost, context_->stream);
      }
    }
    const size_t drawn = drawn_rows_.size();
    if (drawn > 0) {
      // One table: the doubles (temperatures, top-p masses, draws), then the int32s (rows, allowed), then the tokens.
      drawn_table_.reserve(context_, drawn * (3 * sizeof(double) + 3 * sizeof(int32_t)));
      double* doubles = drawn_table_.get<double>();
      int32_t* ints = reinterpret_cast<int32_t*>(doubles + 3 * drawn);
      context_->upload(doubles, drawn_temperatures_.data(), drawn * sizeof(double));
      context_->upload(doubles + drawn, drawn_top_ps_.data(), drawn * sizeof(double));
      context_->upload(doubles + 2 * drawn, drawn_draws_.data(), drawn * sizeof(double));
      context_->upload(ints, drawn_rows_.data(), drawn * sizeof(int32_t));
      context_->upload(ints + drawn, drawn_allowed_.data(), drawn * sizeof(int32_t));
      draw_tokens(logits_.get<float>(), vocab, ints, ints + drawn, doubles, doubles + drawn, doubles + 2 * drawn, int64_t(drawn),
                  ints + 2 * drawn, context_->native());
      host_drawn_tokens_.resize(drawn);
      context_->runtime->copy(host_drawn_tokens_.data(), ints + 2 * drawn, drawn * sizeof(int32_t), CopyKind::DeviceToHost,
                              context_->stream);
    }
    const size_t count = ranked_rows_.size();
    if (count > 0) {
      const size_t candidates = count * size_t(kTopKMax);
      ranked_table_.reserve(context_, 3 * count * sizeof(int32_t));
      ranked_ids_.reserve(context_, candidates * sizeof(int32_t));
      ranked_values_.reserve(context_, candidates * sizeof(float));
      int32_t* table = ranked_table_.get<int32_t>();
      context_->upload(table, ranked_rows_.data(), count * sizeof(int32_t));
      context_->upload(table + count, ranked_counts_.data(), count * sizeof(int32_t));
      context_->upload(table + 2 * count, ranked_allowed_.data(), count * sizeof(int32_t));
      top_k(logits_.get<float>(), vocab, table, table + count, table + 2 * count, int64_t(count), kTopKMax, ranked_ids_.get<int32_t>(),
            ranked_values_.get<float>(), context_->native());
      host_ranked_ids_.resize(candidates);
      host_ranked_values_.resize(candidates);
      context_->runtime->copy(host_ranked_ids_.data(), ranked_ids_.get(), candidates * sizeof(int32_t), CopyKind::DeviceToHost,
                              context_->stream);
      context_->runtime->copy(host_ranked_values_.data(), ranked_values_.get(), candidates * sizeof(float), CopyKind::DeviceToHost,
                              context_->stream);
    }
    context_->runtime->synchronize(context_->stream);
    bool undecided = false;
    for (size_t i = 0; i < drawn; ++i) {
      const size_t r = size_t(drawn_rows_[i]);
      if (host_drawn_tokens_[i] >= 0) {
        out.drawn_tokens[r] = host_drawn_tokens_[i];
        continue;
      }
      // A nucleus cut within rounding of p: the host's sampler decides it from the whole row.
      out.returned[r] = RowReturned::Whole;
      context_->runtime->copy(out.logits + r * vocab, logits_.get<float>() + r * vocab, size_t(vocab) * sizeof(float),
                              CopyKind::DeviceToHost, context_->stream);
      undecided = true;
    }
    if (undecided) context_->runtime->synchronize(context_->stream);
    for (size_t i = 0; i < count; ++i) {
      const size_t from = i * size_t(kTopKMax), to = size_t(ranked_rows_[i]) * size_t(kTopKMax), n = size_t(ranked_counts_[i]);
      std::copy_n(host_ranked_ids_.data() + from, n, out.candidate_ids + to);
      std::copy_n(host_ranked_values_.data() + from, n, out.candidate_values + to);
    }
  }

 protected:
  void run_embed(const Model& model, const int32_t* token_ids, int64_t count, float* out) override {
    std::lock_guard<std::mutex> lock(context_->mutex);
    const DeviceWeights& w = prepared();
    context_->runtime->bind_thread();
    const size_t bytes = size_t(count * model.config().hidden_dim) * sizeof(float);
    embed_ids_.reserve(context_, size_t(count) * sizeof(int32_t));
    logits_hidden_.reserve(context_, bytes);
    context_->upload(embed_ids_.get(), token_ids, size_t(count) * sizeof(int32_t));
    embedding(w.token_embedding, embed_ids_.get<int32_t>(), count, logits_hidden_.get<float>());
    download(out, logits_hidden_.get(), bytes);
  }

  // The layer loop, op for op as CpuBackend::run_step (without its last-layer narrowing, which saves
  // CPU time but changes no result). A decode step's kernels are captured once as a graph and replayed.
  void run_step(const Model& model, KvPool& pool, const StepBatch& batch, std::unique_ptr<BackendWorkspace>& workspace_slot,
                float* hidden_out) override {
    std::lock_guard<std::mutex> lock(context_->mutex);
    const DeviceWeights& w = prepared();
    context_->runtime->bind_thread();
    if (!workspace_slot) workspace_slot = std::make_unique<CudaWorkspace>(context_);
    auto* workspace = dynamic_cast<CudaWorkspace*>(workspace_slot.get());
    require(workspace != nullptr, ErrorKind::State, "a CUDA step was given another backend's workspace");
    CudaWorkspace& ws = *workspace;
    const ModelConfig& config = model.config();
    const int64_t rows = batch.token_count();
    const int64_t outputs = int64_t(batch.output_rows.size());
    const StepShape shape = plan_step(config, batch, ws);
    reserve_activations(config, rows, outputs, shape.visible, ws);
    const auto enqueue = [&] { enqueue_step(config, w, pool, rows, outputs, shape, ws); };
    // Decode steps (one token per sequence) split each row's keys across blocks and repeat with the
    // same shapes for many tokens; steps with prompt tokens run the tiled flash kernel instead.
    if (!shape.flash) {
      const DecodeGraphKey key{rows, outputs, shape.max_blocks, (shape.visible + kAttentionSplitKeys - 1) / kAttentionSplitKeys, &pool,
                               ws.buffers_generation};
      ws.decode_graph.run(key, enqueue);
    } else {
      enqueue();
    }
    if (outputs > 0) download(hidden_out, ws.hidden.get(), size_t(outputs * config.hidden_dim) * sizeof(float));
    else context_->runtime->synchronize(context_->stream);
  }

 private:
  // What plan_step found: the most slots a sequence sees, the block tables' row stride, and whether
  // attention runs the flash kernel (the step has prompt tokens and the head fits it).
  struct StepShape {
    int64_t visible = 1;
    int64_t max_blocks = 1;
    bool flash = false;
  };

  // Every kernel of one step, in order, on the context's stream (captured or run).
  void enqueue_step(const ModelConfig& config, const DeviceWeights& w, KvPool& pool, int64_t rows, int64_t outputs, const StepShape& shape,
                    CudaWorkspace& ws) {
    auto& kv = static_cast<DeviceKvStorage&>(pool.storage());  // Backend::step checked the pool is this backend's
    const cudaStream_t stream = context_->native();
    const int64_t D = config.hidden_dim, d = config.head_dim();
    const int64_t heads = config.num_heads, kv_heads = config.num_kv_heads;
    const int64_t qkv_cols = config.qkv_rows();
    float* x = ws.residual.get<float>();
    float* attn_input = ws.attn_input.get<float>();
    float* mlp_input = ws.mlp_input.get<float>();
    float* qkv = ws.qkv.get<float>();
    float* attention = ws.attention.get<float>();
    float* ffn_hidden = ws.ffn_hidden.get<float>();
    const bool rotary = config.position_encoding == PositionEncoding::Rotary;
    if (rotary) {
      rotary_tables(ws.positions.get<int32_t>(), ws.rotary_bases.get<double>(), ws.rotary_scales.get<double>(), rows, d,
                    ws.rotary_cos.get<float>(), ws.rotary_sin.get<float>(), stream);
    }
    embedding(w.token_embedding, ws.token_ids.get<int32_t>(), rows, x);

    const float* slopes = config.position_encoding == PositionEncoding::Alibi ? w.alibi_slopes.get<float>() : nullptr;
    const Element kv_type = element_of(pool.dtype());
    const int64_t head_stride = pool.num_blocks() * kKvTokens * d;
    const AttentionRows attention_rows{ws.row_sequence.get<int32_t>(), ws.row_last_slot.get<int32_t>(), ws.block_tables.get<int32_t>(),
                                       shape.max_blocks};
    const AttentionTiles attention_tiles{ws.tile_sequence.get<int32_t>(), ws.tile_first_row.get<int32_t>(), ws.tile_first_slot.get<int32_t>(),
                                         ws.tile_count.get<int32_t>(), int64_t(ws.host_tile_count.size()), ws.block_tables.get<int32_t>(),
                                         shape.max_blocks};
    for (int64_t l = 0; l < config.num_layers; ++l) {
      const DeviceLayer& layer = w.layers[size_t(l)];
      add_layer_norm(x, nullptr, rows, D, layer.attn_norm_gamma.get<float>(), layer.attn_norm_beta.get<float>(), config.layer_norm_epsilon,
                     attn_input, stream);
      // Parallel blocks read both norms from the block's input, before the residual adds change it.
      if (config.block_layout == BlockLayout::ParallelTwoNorms) {
        add_layer_norm(x, nullptr, rows, D, layer.mlp_norm_gamma.get<float>(), layer.mlp_norm_beta.get<float>(), config.layer_norm_epsilon,
                       mlp_input, stream);
      }
      linear(attn_input, rows, layer.qkv, GemmEpilogue{layer.qkv_bias.get<float>(), false, false}, ws.gemm_input, qkv);
      if (rotary) apply_rotary(qkv, rows, qkv_cols, 0, heads + kv_heads, d, ws.rotary_cos.get<float>(), ws.rotary_sin.get<float>(), stream);
      const PagedKvWrite kv_out{pool.keys(0, l, 0), pool.values(0, l, 0), kv_type, head_stride, kKvTokens * d, kv.valid(), kv.positions()};
      write_kv(qkv, rows, qkv_cols, heads, kv_heads, d, ws.row_block.get<int32_t>(), ws.row_slot.get<int32_t>(), ws.row_valid.get<uint8_t>(),
               ws.positions.get<int32_t>(), kv_out, stream);
      const PagedKv kv_in{pool.keys(0, l, 0), pool.values(0, l, 0), kv_type, head_stride, kKvTokens * d, kv.valid(), kv.positions()};
      if (shape.flash) {
        flash_attention_prefill(qkv, qkv_cols, heads, kv_heads, d, slopes, kv_in, attention_tiles, attention, stream);
      } else {
        paged_attention(qkv, rows, qkv_cols, heads, kv_heads, d, slopes, kv_in, attention_rows, shape.visible,
                        ws.attention_partials.get<float>(), attention, stream);
      }
      // The residual adds happen in the GEMMs' epilogues: x += attention projection, x += MLP output.
      linear(attention, rows, layer.attn_out, GemmEpilogue{layer.attn_out_bias.get<float>(), false, true}, ws.gemm_input, x);
      const float* ffn_input = attn_input;
      if (config.block_layout == BlockLayout::Sequential) {
        add_layer_norm(x, nullptr, rows, D, layer.mlp_norm_gamma.get<float>(), layer.mlp_norm_beta.get<float>(), config.layer_norm_epsilon,
                       mlp_input, stream);
        ffn_input = mlp_input;
      } else if (config.block_layout == BlockLayout::ParallelTwoNorms) {
        ffn_input = mlp_input;
      }
      linear(ffn_input, rows, layer.ffn_up, GemmEpilogue{layer.ffn_up_bias.get<float>(), true, false}, ws.gemm_input, ffn_hidden);
      linear(ffn_hidden, rows, layer.ffn_down, GemmEpilogue{layer.ffn_down_bias.get<float>(), false, true}, ws.gemm_input, x);
    }
    if (outputs == 0) return;
    gather_rows(x, D, ws.output_rows.get<int32_t>(), outputs, attn_input, stream);
    add_layer_norm(attn_input, nullptr, outputs, D, w.final_norm_gamma.get<float>(), w.final_norm_beta.get<float>(), config.layer_norm_epsilon,
                   ws.hidden.get<float>(), stream);
  }

  // Enqueues logits_ = hidden · headᵀ for `rows` host rows of hidden states (the caller holds the lock).
  void enqueue_logits(const ModelConfig& config, const float* hidden, int64_t rows) {
    const DeviceWeights& w = prepared();
    const size_t hidden_bytes = size_t(rows * config.hidden_dim) * sizeof(float);
    logits_hidden_.reserve(context_, hidden_bytes);
    logits_.reserve(context_, size_t(rows * config.vocab_size) * sizeof(float));
    const DeviceMatrix& head = config.tied_head ? w.token_embedding : w.lm_head;
    logits_gemm_input_.reserve(context_, wmma_input_bytes(head.type, rows, head.cols));
    context_->upload(logits_hidden_.get(), hidden, hidden_bytes);
    linear(logits_hidden_.get<float>(), rows, head, GemmEpilogue{}, logits_gemm_input_, logits_.get<float>());
  }

  const DeviceWeights& prepared() const {
    require(weights_ != nullptr, ErrorKind::State, "this model's weights are not on " + label_ + " yet (prepareWeights has not run)");
    return *weights_;
  }

  void download(void* host, const void* device, size_t bytes) {
    context_->runtime->copy(host, device, bytes, CopyKind::DeviceToHost, context_->stream);
    context_->runtime->synchronize(context_->stream);
  }

  DeviceBuffer upload_vector(const WeightVector& values) {
    if (values.empty()) return DeviceBuffer();
    DeviceBuffer buffer(context_, values.size() * sizeof(float));
    context_->upload(buffer.get(), values.data(), values.size() * sizeof(float));
    context_->runtime->synchronize(context_->stream);
    return buffer;
  }

  void embedding(const DeviceMatrix& table, const int32_t* ids, int64_t count, float* out) {
    if (table.type == Element::I8) {
      embedding_int8(table.data.get<int8_t>(), table.scales.get<float>(), table.cols, ids, count, out, context_->native());
    } else {
      FALCON_CUDA_NS::embedding(table.data.get(), table.type, table.cols, ids, count, out, context_->native());
    }
  }

  // y[m][w.rows] (+)= epilogue(x · wᵀ) with the CPU's arithmetic for w's dtype where the fixtures
  // need it: float32 sums of float32 products (float32 and int8 weights: float32 inputs, int8 with a
  // per-row scale), bfloat16 inputs and weights on the tensor cores. Float16 weights multiply float32
  // inputs on the CPU; here many rows take the tensor cores too, each input split into two float16
  // parts (split_f16, within 2^-22 of it: near float32). Few rows go to the GEMV, which reads each
  // weight once. `gemm_input` holds at least wmma_input_bytes(w.type, m, w.cols) (the caller reserves
  // it: a captured graph cannot allocate).
  void linear(const float* x, int64_t m, const DeviceMatrix& w, const GemmEpilogue& epilogue, const DeviceBuffer& gemm_input, float* y) {
    if (m <= kGemvMaxRows) {
      if (w.type == Element::I8) {
        gemv_int8(x, m, w.cols, w.data.get<int8_t>(), w.scales.get<float>(), w.rows, epilogue, y, context_->native());
      } else {
        gemv(x, m, w.cols, w.data.get(), w.type, w.rows, epilogue, y, context_->native());
      }
      return;
    }
    if (w.type == Element::BF16 || w.type == Element::F16) {
      require(gemm_input.bytes() >= wmma_input_bytes(w.type, m, w.cols), ErrorKind::State, "the 16-bit GEMM input buffer was not reserved");
      const WmmaInput input = stage_wmma_input(x, m, w.cols, w.type, gemm_input.get(), context_->native());
      gemm_wmma(input, w.type, m, w.cols, w.data.get<uint16_t>(), w.rows, epilogue, y, context_->native());
      return;
    }
    gemm_f32(x, m, w.cols, w.data.get(), w.type, w.type == Element::I8 ? w.scales.get<float>() : nullptr, w.rows, epilogue, y,
             context_->native());
  }

  // Builds the step's tables on the host and uploads them (Backend::step has recorded the new slots'
  // flags and positions in the pool; write_kv mirrors them on the device).
  StepShape plan_step(const ModelConfig& config, const StepBatch& batch, CudaWorkspace& ws) {
    const size_t rows = size_t(batch.token_count());
    ws.host_row_block.resize(rows);
    ws.host_row_slot.resize(rows);
    ws.host_row_sequence.resize(rows);
    ws.host_row_last_slot.resize(rows);
    ws.host_rotary_bases.resize(rows);
    ws.host_rotary_scales.resize(rows);
    StepShape shape;
    for (const StepSequence& seq : batch.sequences) shape.visible = std::max(shape.visible, seq.start + seq.count);
    shape.flash = batch.token_count() > int64_t(batch.sequences.size()) && config.head_dim() <= kFlashMaxHeadDim;
    // The tables' stride grows a whole attention split (16 blocks) at a time, so a decode graph
    // stays valid until a sequence needs one more split.
    constexpr int64_t kStrideBlocks = kAttentionSplitKeys / kKvTokens;
    shape.max_blocks = ((shape.visible + kKvTokens - 1) / kKvTokens + kStrideBlocks - 1) / kStrideBlocks * kStrideBlocks;
    const int64_t max_blocks = shape.max_blocks;
    ws.host_block_tables.assign(batch.sequences.size() * size_t(max_blocks), 0);
    ws.host_tile_sequence.clear();
    ws.host_tile_first_row.clear();
    ws.host_tile_first_slot.clear();
    ws.host_tile_count.clear();
    size_t row = 0;
    for (size_t i = 0; i < batch.sequences.size(); ++i) {
      const StepSequence& seq = batch.sequences[i];
      const falcon::cuda::RotaryScaling scaling = falcon::cuda::rotary_scaling(config, seq.rope_length);
      const int64_t blocks = (seq.start + seq.count + kKvTokens - 1) / kKvTokens;
      std::copy_n(seq.block_table, blocks, ws.host_block_tables.begin() + ptrdiff_t(i * size_t(max_blocks)));
      for (int64_t first = 0; first < seq.count; first += kFlashQueries) {
        ws.host_tile_sequence.push_back(int32_t(i));
        ws.host_tile_first_row.push_back(int32_t(row + size_t(first)));
        ws.host_tile_first_slot.push_back(int32_t(seq.start + first));
        ws.host_tile_count.push_back(int32_t(std::min(kFlashQueries, seq.count - first)));
      }
      for (int64_t t = 0; t < seq.count; ++t, ++row) {
        const int64_t slot = seq.start + t;
        const int32_t block = seq.block_table[slot / kKvTokens];
        const int32_t in_block = int32_t(slot % kKvTokens);
        ws.host_row_block[row] = block;
        ws.host_row_slot[row] = in_block;
        ws.host_row_sequence[row] = int32_t(i);
        ws.host_row_last_slot[row] = int32_t(slot);
        ws.host_rotary_bases[row] = scaling.base;
        ws.host_rotary_scales[row] = scaling.position_scale;
      }
    }
    ws.host_output_rows.assign(batch.output_rows.begin(), batch.output_rows.end());
    upload_table(ws.token_ids, batch.token_ids, ws);
    upload_table(ws.positions, batch.positions, ws);
    upload_table(ws.row_valid, batch.valid, ws);
    upload_table(ws.row_block, ws.host_row_block, ws);
    upload_table(ws.row_slot, ws.host_row_slot, ws);
    upload_table(ws.row_sequence, ws.host_row_sequence, ws);
    upload_table(ws.row_last_slot, ws.host_row_last_slot, ws);
    upload_table(ws.block_tables, ws.host_block_tables, ws);
    upload_table(ws.rotary_bases, ws.host_rotary_bases, ws);
    upload_table(ws.rotary_scales, ws.host_rotary_scales, ws);
    upload_table(ws.output_rows, ws.host_output_rows, ws);
    upload_table(ws.tile_sequence, ws.host_tile_sequence, ws);
    upload_table(ws.tile_first_row, ws.host_tile_first_row, ws);
    upload_table(ws.tile_first_slot, ws.host_tile_first_slot, ws);
    upload_table(ws.tile_count, ws.host_tile_count, ws);
    return shape;
  }

  template <typename Vector>
  void upload_table(DeviceBuffer& buffer, const Vector& values, CudaWorkspace& ws) {
    const size_t bytes = values.size() * sizeof(values[0]);
    if (buffer.reserve(context_, bytes)) ++ws.buffers_generation;
    context_->upload(buffer.get(), values.data(), bytes);
  }

  void reserve_activations(const ModelConfig& config, int64_t rows, int64_t outputs, int64_t visible, CudaWorkspace& ws) {
    const size_t f = sizeof(float);
    const size_t D = size_t(config.hidden_dim), half = size_t(config.head_dim() / 2);
    size_t gemm_input = 0;
    for (const DeviceLayer& layer : prepared().layers) {
      for (const DeviceMatrix* matrix : {&layer.qkv, &layer.attn_out, &layer.ffn_up, &layer.ffn_down}) {
        gemm_input = std::max(gemm_input, wmma_input_bytes(matrix->type, rows, matrix->cols));
      }
    }
    const std::pair<DeviceBuffer*, size_t> sizes[] = {
        {&ws.residual, size_t(rows) * D * f},
        {&ws.attn_input, size_t(std::max(rows, outputs)) * D * f},
        {&ws.mlp_input, size_t(rows) * D * f},
        {&ws.qkv, size_t(rows * config.qkv_rows()) * f},
        {&ws.attention, size_t(rows) * D * f},
        {&ws.ffn_hidden, size_t(rows * config.ffn_dim) * f},
        // The widest 16-bit GEMM input of the layers; reserved here because a captured graph cannot allocate.
        {&ws.gemm_input, gemm_input},
        {&ws.rotary_cos, size_t(rows) * half * f},
        {&ws.rotary_sin, size_t(rows) * half * f},
        {&ws.attention_partials, size_t(attention_workspace_floats(rows, config.num_heads, config.head_dim(), visible)) * f},
        {&ws.hidden, size_t(std::max<int64_t>(outputs, 1)) * D * f},
    };
    for (const auto& [buffer, bytes] : sizes) {
      if (buffer->reserve(context_, bytes)) ++ws.buffers_generation;
    }
  }

  std::shared_ptr<DeviceContext> context_;
  std::string label_;
  std::shared_ptr<DeviceWeightStore> store_;
  std::unique_ptr<DeviceWeights> weights_;
  // project_logits' and embed's device buffers (those calls have no workspace).
  DeviceBuffer logits_hidden_, logits_, logits_gemm_input_, embed_ids_;
  // project_logits_for_sampling's ranked rows: their step rows, counts and allowed vocabularies (one
  // table on the device), and their candidates, on the device and back on the host.
  std::vector<int32_t> ranked_rows_, ranked_counts_, ranked_allowed_, host_ranked_ids_;
  std::vector<float> host_ranked_values_;
  DeviceBuffer ranked_table_, ranked_ids_, ranked_values_;
  // Its drawn rows: their step rows, allowed vocabularies, temperatures, top-p masses and draws, and the tokens.
  std::vector<int32_t> drawn_rows_, drawn_allowed_, host_drawn_tokens_;
  std::vector<double> drawn_temperatures_, drawn_top_ps_, drawn_draws_;
  DeviceBuffer drawn_table_;
};

}  // namespace
}  // namespace FALCON_CUDA_NS
