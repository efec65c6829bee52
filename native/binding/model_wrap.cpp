#include "model_wrap.h"

#include <functional>
#include <vector>

#include "addon_data.h"
#include "cache_wrap.h"
#include "device_choice.h"
#include "weight_file_wrap.h"
#include "napi_util.h"
#include "../core/gguf_dequant.h"
#include "../core/thread_pool.h"

namespace falcon::binding {

ModelConfig read_config(const Napi::Env& env, const Napi::Object& object) {
  auto integer = [&](const char* key) -> int64_t {
    Napi::Value value = object.Get(key);
    if (!value.IsNumber()) throw make_error(env, ErrorKind::Config, std::string("config.") + key + " must be a number");
    return value.As<Napi::Number>().Int64Value();
  };
  auto number = [&](const char* key) -> double {
    Napi::Value value = object.Get(key);
    if (!value.IsNumber()) throw make_error(env, ErrorKind::Config, std::string("config.") + key + " must be a number");
    return value.As<Napi::Number>().DoubleValue();
  };
  auto text = [&](const char* key) -> std::string {
    Napi::Value value = object.Get(key);
    if (!value.IsString()) throw make_error(env, ErrorKind::Config, std::string("config.") + key + " must be a string");
    return value.As<Napi::String>().Utf8Value();
  };
  auto boolean = [&](const char* key) -> bool {
    Napi::Value value = object.Get(key);
    if (!value.IsBoolean()) throw make_error(env, ErrorKind::Config, std::string("config.") + key + " must be a boolean");
    return value.As<Napi::Boolean>().Value();
  };

  ModelConfig config;
  config.vocab_size = integer("vocabSize");
  config.num_layers = integer("numLayers");
  config.num_heads = integer("numHeads");
  config.num_kv_heads = integer("numKvHeads");
  config.hidden_dim = integer("hiddenDim");
  config.ffn_dim = integer("ffnDim");
  config.layer_norm_epsilon = float(number("layerNormEpsilon"));
  const std::string position = text("positionEncoding");
  if (position == "alibi") config.position_encoding = PositionEncoding::Alibi;
  else if (position == "rotary") config.position_encoding = PositionEncoding::Rotary;
  else throw make_error(env, ErrorKind::Config, "config.positionEncoding must be 'alibi' or 'rotary'");
  config.rope_theta = number("ropeTheta");
  const std::string scaling = text("ropeScaling");
  if (scaling == "none") config.rope_scaling = RopeScaling::None;
  else if (scaling == "linear") config.rope_scaling = RopeScaling::Linear;
  else if (scaling == "dynamic") config.rope_scaling = RopeScaling::Dynamic;
  else throw make_error(env, ErrorKind::Config, "config.ropeScaling must be 'none', 'linear' or 'dynamic'");
  config.rope_scaling_factor = number("ropeScalingFactor");
  config.max_position_embeddings = integer("maxPositionEmbeddings");
  if (!parse_block_layout(text("blockLayout"), &config.block_layout)) {
    throw make_error(env, ErrorKind::Config,
                     "config.blockLayout must be 'sequential', 'parallel_one_norm' or 'parallel_two_norms'");
  }
  config.use_bias = boolean("useBias");
  config.tied_head = boolean("tiedHead");
  if (!parse_dtype(text("dtype"), &config.dtype) || config.dtype == DType::Float64) {
    throw make_error(env, ErrorKind::Config, "config.dtype must be 'float32', 'bfloat16', 'float16', 'int8' or 'int4'");
  }
  return config;
}

namespace {

// Runs `work` on a libuv thread and settles a promise; `finish` builds the resolved value.
class TaskWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Finish = std::function<Napi::Value(Napi::Env)>;

  TaskWorker(Napi::Env env, Work work, Finish finish)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        finish_(std::move(finish)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    ThreadPoolPin pin;
    try {
      work_();
    } catch (const falcon::Error& e) {
      error_.capture(e.kind(), e.what());
    } catch (const std::bad_alloc&) {
      error_.capture(ErrorKind::State, "out of memory");
    } catch (const std::exception& e) {
      error_.capture(ErrorKind::State, e.what());
    }
  }

  // Runs on the main thread once the work is over, before the promise settles.
  void on_settle(std::function<void()> settle) { settle_ = std::move(settle); }

  // When the environment is shutting down (worker.terminate() during the call), JavaScript cannot
  // run: settling the promise then fails with a Napi::Error, which node-addon-api swallows, built
  // with NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS, instead of letting it escape into std::terminate.
  // settle_ runs first and touches no JavaScript, so a cache is released either way.
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (settle_) settle_();
    if (error_.set) {
      deferred_.Reject(make_error(env, error_.kind, error_.message).Value());
      return;
    }
    deferred_.Resolve(finish_ ? finish_(env) : env.Undefined());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Finish finish_;
  PendingError error_;
  std::function<void()> settle_;
};

// A worker whose work fills `count` floats, resolved as a Float32Array that adopts them (no copy).
TaskWorker* float_result_worker(Napi::Env env, size_t count, std::function<void(float*)> fill) {
  auto output = std::make_shared<std::unique_ptr<TrackedVector<float>>>();
  return new TaskWorker(
      env,
      [output, count, fill] {
        *output = std::make_unique<TrackedVector<float>>(count);
        fill((*output)->data());
      },
      [output](Napi::Env e) -> Napi::Value { return adopt_floats(e, std::move(*output)); });
}

Napi::Value queue(TaskWorker* worker) {
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

}  // namespace

Napi::Function ModelWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {
                         InstanceMethod<&ModelWrap::SetWeight>("setWeight"),
                         InstanceMethod<&ModelWrap::SetWeightFromFile>("setWeightFromFile"),
                         InstanceMethod<&ModelWrap::SetWeightFromGgml>("setWeightFromGgml"),
                         InstanceMethod<&ModelWrap::GetWeight>("getWeight"),
                         InstanceMethod<&ModelWrap::InitializeRandom>("initializeRandom"),
                         InstanceMethod<&ModelWrap::RequireComplete>("requireComplete"),
                         InstanceMethod<&ModelWrap::PrepareWeights>("prepareWeights"),
                         InstanceMethod<&ModelWrap::Forward>("forward"),
                         InstanceMethod<&ModelWrap::ProjectLogits>("projectLogits"),
                         InstanceMethod<&ModelWrap::Embed>("embed"),
                         InstanceMethod<&ModelWrap::Info>("info"),
                         InstanceMethod<&ModelWrap::WeightNames>("weightNames"),
                         InstanceMethod<&ModelWrap::Dispose>("dispose"),
                     });
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw make_error(env, ErrorKind::Config, "NativeModel needs a config object");
  ModelConfig config = read_config(env, info[0].As<Napi::Object>());
  std::string device = "cpu";
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsString()) throw make_error(env, ErrorKind::Input, "device must be a string");
    device = info[1].As<Napi::String>().Utf8Value();
  }
  // The backend first: a device that cannot be had is refused before the host memory is allocated.
  backend_ = call_core(env, [&] { return backend_for_device(device, config); });
  model_ = call_core(env, [&] { return std::make_shared<Model>(config); });
}

std::shared_ptr<Model> ModelWrap::model(Napi::Env env) const {
  if (!model_) throw make_error(env, ErrorKind::State, "this model has been disposed");
  return model_;
}

namespace {

// Reads (dtype, rows, cols, inputMajor) at argument `first` into a TensorSource without data.
TensorSource read_source_shape(const Napi::CallbackInfo& info, size_t first, const std::string& name) {
  Napi::Env env = info.Env();
  if (!info[first].IsString()) throw make_error(env, ErrorKind::Weights, "weight dtype must be a string");
  TensorSource source;
  if (!parse_dtype(info[first].As<Napi::String>().Utf8Value(), &source.dtype) || is_quantised(source.dtype)) {
    throw make_error(env, ErrorKind::Weights, "weight '" + name + "': unsupported source dtype");
  }
  source.rows = integer_argument(info, first + 1, "rows");
  source.cols = integer_argument(info, first + 2, "cols");
  source.input_major = info.Length() > first + 3 && info[first + 3].ToBoolean().Value();
  // Each side is at most 2^31, so the byte count below cannot overflow 64 bits.
  if (source.rows <= 0 || source.cols <= 0 || source.rows > (int64_t(1) << 31) || source.cols > (int64_t(1) << 31)) {
    throw make_error(env, ErrorKind::Weights, "weight '" + name + "': bad shape");
  }
  return source;
}

uint64_t source_bytes(const TensorSource& source) {
  return uint64_t(source.rows) * uint64_t(source.cols) * dtype_size(source.dtype);
}

std::string weight_name(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) throw make_error(info.Env(), ErrorKind::Weights, "weight name must be a string");
  return info[0].As<Napi::String>().Utf8Value();
}

}  // namespace

// setWeight(name, rowOffset, data, dtype, rows, cols, inputMajor) → Promise<void>
Napi::Value ModelWrap::SetWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  const std::string name = weight_name(info);
  int64_t row_offset = integer_argument(info, 1, "rowOffset");
  if (!info[2].IsTypedArray()) throw make_error(env, ErrorKind::Weights, "weight data must be a typed array");
  Napi::TypedArray data = info[2].As<Napi::TypedArray>();
  TensorSource source = read_source_shape(info, 3, name);
  if (source_bytes(source) != uint64_t(data.ByteLength())) {
    throw make_error(env, ErrorKind::Weights,
                     "weight '" + name + "': " + std::to_string(data.ByteLength()) + " bytes do not hold " +
                         std::to_string(source.rows) + "x" + std::to_string(source.cols) + " " +
                         dtype_name(source.dtype) + " values");
  }
  // Copied now: JavaScript may transfer or collect the buffer while the worker runs.
  const auto* first_byte = static_cast<const uint8_t*>(data.ArrayBuffer().Data()) + data.ByteOffset();
  auto bytes = std::make_shared<TrackedVector<uint8_t>>(
      call_core(env, [&] { return owned_copy<uint8_t>(first_byte, data.ByteLength(), "weight '" + name + "'"); }));
  auto work = [model, name, row_offset, source, bytes]() mutable {
    source.data = bytes->data();
    model->set_weight(name, row_offset, source);
  };
  return queue(new TaskWorker(env, work, nullptr));
}

// setWeightFromFile(name, rowOffset, file, byteOffset, dtype, rows, cols, inputMajor) → Promise<void>
// The bytes are read a block at a time and repacked: weights are resident once, and a file that
// shrinks meanwhile gives an error naming it and the weight.
Napi::Value ModelWrap::SetWeightFromFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  auto* data = env.GetInstanceData<AddonData>();
  const std::string name = weight_name(info);
  int64_t row_offset = integer_argument(info, 1, "rowOffset");
  std::shared_ptr<WeightFile> file =
      unwrap_instance<WeightFileWrap>(env, info[2], data->weight_file_constructor, "file")->file(env);
  const int64_t byte_offset = integer_argument(info, 3, "byteOffset");
  TensorSource source = read_source_shape(info, 4, name);
  const uint64_t bytes = source_bytes(source);
  if (byte_offset < 0 || !file->contains(uint64_t(byte_offset), bytes)) {
    throw make_error(env, ErrorKind::Weights,
                     file->path() + ": weight '" + name + "' needs bytes [" + std::to_string(byte_offset) + ", " +
                         std::to_string(uint64_t(byte_offset) + bytes) + ") but the file has " +
                         std::to_string(file->size()));
  }
  auto work = [model, name, row_offset, source, file, byte_offset] {
    set_weight_from_file(*model, name, row_offset, source, *file, uint64_t(byte_offset));
  };
  return queue(new TaskWorker(env, work, nullptr));
}

// setWeightFromGgml(name, rowOffset, file, byteOffset, ggmlType, rows, cols) → Promise<void>: a block-quantised
// GGUF tensor, dequantised to float32 then stored in the model dtype.
Napi::Value ModelWrap::SetWeightFromGgml(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  auto* data = env.GetInstanceData<AddonData>();
  const std::string name = weight_name(info);
  const int64_t row_offset = integer_argument(info, 1, "rowOffset");
  std::shared_ptr<WeightFile> file =
      unwrap_instance<WeightFileWrap>(env, info[2], data->weight_file_constructor, "file")->file(env);
  const int64_t byte_offset = integer_argument(info, 3, "byteOffset");
  const int64_t type = integer_argument(info, 4, "ggmlType");
  const int64_t rows = integer_argument(info, 5, "rows");
  const int64_t cols = integer_argument(info, 6, "cols");
  int64_t block_values = 0, block_bytes = 0;
  if (type < 0 || type > 0xffff || !ggml_quant_block(uint32_t(type), &block_values, &block_bytes)) {
    throw make_error(env, ErrorKind::Weights, "weight '" + name + "': unsupported ggml type " + std::to_string(type));
  }
  if (rows <= 0 || cols <= 0 || rows > (int64_t(1) << 31) || cols > (int64_t(1) << 31) || cols % block_values != 0) {
    throw make_error(env, ErrorKind::Weights, "weight '" + name + "': bad shape for its ggml type");
  }
  const uint64_t bytes = uint64_t(rows) * uint64_t(cols / block_values) * uint64_t(block_bytes);
  if (byte_offset < 0 || !file->contains(uint64_t(byte_offset), bytes)) {
    throw make_error(env, ErrorKind::Weights,
                     file->path() + ": weight '" + name + "' needs bytes [" + std::to_string(byte_offset) + ", " +
                         std::to_string(uint64_t(byte_offset) + bytes) + ") but the file has " +
                         std::to_string(file->size()));
  }
  const auto quant = GgmlQuantType(uint32_t(type));
  auto work = [model, name, row_offset, quant, rows, cols, file, byte_offset] {
    set_weight_from_ggml(*model, name, row_offset, quant, rows, cols, *file, uint64_t(byte_offset));
  };
  return queue(new TaskWorker(env, work, nullptr));
}

// getWeight(name) → Promise<{ data: Uint8Array, dtype, rows, cols }>: matrices in the model dtype, vectors float32.
Napi::Value ModelWrap::GetWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  const std::string name = weight_name(info);
  struct Result {
    TrackedVector<uint8_t> bytes;
    DType dtype = DType::Float32;
    int64_t rows = 0, cols = 0;
  };
  auto result = std::make_shared<Result>();
  auto work = [model, name, result] { result->bytes = model->read_weight(name, &result->dtype, &result->rows, &result->cols); };
  auto finish = [result](Napi::Env e) -> Napi::Value {
    auto owned = std::make_unique<TrackedVector<uint8_t>>(std::move(result->bytes));
    const size_t size = owned->size();
    Napi::Object object = Napi::Object::New(e);
    object.Set("data", Napi::Uint8Array::New(e, size, adopt_buffer(e, std::move(owned)), 0));
    object.Set("dtype", Napi::String::New(e, dtype_name(result->dtype)));
    object.Set("rows", Napi::Number::New(e, double(result->rows)));
    object.Set("cols", Napi::Number::New(e, double(result->cols)));
    return object;
  };
  return queue(new TaskWorker(env, work, finish));
}

Napi::Value ModelWrap::InitializeRandom(const Napi::CallbackInfo& info) {
  auto model = this->model(info.Env());
  uint64_t seed = uint64_t(integer_argument(info, 0, "seed"));
  return queue(new TaskWorker(info.Env(), [model, seed] { model->initialize_random(seed); }, nullptr));
}

Napi::Value ModelWrap::RequireComplete(const Napi::CallbackInfo& info) {
  auto model = this->model(info.Env());
  call_core(info.Env(), [&] { model->require_complete(); });
  return info.Env().Undefined();
}

// prepareWeights() → Promise<void>: once every weight is set, puts them where the backend's kernels
// read them (CUDA: uploads them and frees the host copy). Every load ends with it.
Napi::Value ModelWrap::PrepareWeights(const Napi::CallbackInfo& info) {
  auto model = this->model(info.Env());
  call_core(info.Env(), [&] { model->require_complete(); });
  auto backend = backend_;
  return queue(new TaskWorker(info.Env(), [model, backend] { backend->prepare_weights(*model); }, nullptr));
}

// forward(tokenIds, paddingMask | null, positionIds | null, batch, length, cache | null, start | null)
//   → Promise<Float32Array> of hidden states [batch, length, hidden]
Napi::Value ModelWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  auto* data = env.GetInstanceData<AddonData>();
  Napi::Int32Array token_ids;
  if (!optional_typed_array(info, 0, "tokenIds", &token_ids)) throw make_error(env, ErrorKind::Input, "tokenIds is required");
  Napi::Uint8Array padding_mask;
  bool has_mask = optional_typed_array(info, 1, "paddingMask", &padding_mask);
  Napi::Int32Array position_ids;
  bool has_positions = optional_typed_array(info, 2, "positionIds", &position_ids);
  const int64_t batch = integer_argument(info, 3, "batch");
  const int64_t length = integer_argument(info, 4, "length");
  if (batch <= 0 || length <= 0) throw make_error(env, ErrorKind::Input, "batch and length must be positive");
  const size_t count = size_t(batch) * size_t(length);
  if (token_ids.ElementLength() != count || (has_mask && padding_mask.ElementLength() != count) ||
      (has_positions && position_ids.ElementLength() != count)) {
    throw make_error(env, ErrorKind::Input, "tokenIds, paddingMask and positionIds must each hold batch×length values");
  }

  std::shared_ptr<KvCache> cache;
  if (info.Length() > 5 && !info[5].IsNull() && !info[5].IsUndefined()) {
    CacheWrap* wrap = unwrap_instance<CacheWrap>(env, info[5], data->cache_constructor, "cache");
    cache = wrap->cache(env);
    if (wrap->owner() != model.get()) throw make_error(env, ErrorKind::Input, "this cache was created for another model");
    if (cache->batch_size() != batch) {
      throw make_error(env, ErrorKind::Input, "the cache holds " + std::to_string(cache->batch_size()) +
                                                  " sequences but tokenIds has " + std::to_string(batch) + " rows");
    }
  }
  std::vector<int64_t> start(size_t(batch), 0);
  Napi::Int32Array start_array;
  if (optional_typed_array(info, 6, "cacheUpdateIndex", &start_array)) {
    if (start_array.ElementLength() != size_t(batch)) {
      throw make_error(env, ErrorKind::Input, "cacheUpdateIndex must hold one index per row");
    }
    for (int64_t b = 0; b < batch; ++b) start[size_t(b)] = start_array[size_t(b)];
  }
  call_core(env, [&] {
    require_memory(forward_memory_bytes(model->config(), batch, length, cache == nullptr), ErrorKind::Input,
                   "a forward pass over " + std::to_string(batch) + " × " + std::to_string(length) + " tokens");
  });
  if (cache && !cache->try_acquire()) {
    throw make_error(env, ErrorKind::Input, "this cache is in use by another call; await it before reusing the cache");
  }

  // Inputs are small: copying them frees the worker from JS-owned memory.
  std::vector<int32_t> ids(token_ids.Data(), token_ids.Data() + count);
  std::vector<uint8_t> mask = has_mask ? std::vector<uint8_t>(padding_mask.Data(), padding_mask.Data() + count)
                                       : std::vector<uint8_t>();
  std::vector<int32_t> positions = has_positions
                                       ? std::vector<int32_t>(position_ids.Data(), position_ids.Data() + count)
                                       : std::vector<int32_t>();
  auto backend = backend_;
  auto fill = [=](float* hidden_out) {
    std::shared_ptr<KvCache> active = cache;
    if (!active) active = std::make_shared<KvCache>(model->config(), batch, length, backend.get());
    ForwardRequest request;
    request.batch = batch;
    request.length = length;
    request.token_ids = ids.data();
    request.padding_mask = mask.empty() ? nullptr : mask.data();
    request.position_ids = positions.empty() ? nullptr : positions.data();
    request.cache = active.get();
    request.start = start;
    backend->forward(*model, request, active->workspace, hidden_out);
  };
  auto* worker = float_result_worker(env, count * size_t(model->config().hidden_dim), fill);
  // The cache stays busy until the promise settles, so JavaScript never sees it free while in use.
  if (cache) worker->on_settle([cache] { cache->release(); });
  return queue(worker);
}

// projectLogits(hidden: Float32Array, rows) → Promise<Float32Array> [rows, vocab]
Napi::Value ModelWrap::ProjectLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  Napi::Float32Array hidden;
  if (!optional_typed_array(info, 0, "hidden", &hidden)) throw make_error(env, ErrorKind::Input, "hidden is required");
  const int64_t rows = integer_argument(info, 1, "rows");
  const int64_t D = model->config().hidden_dim;
  if (rows <= 0 || hidden.ElementLength() != size_t(rows * D)) {
    throw make_error(env, ErrorKind::Input, "hidden must hold rows × " + std::to_string(D) + " values");
  }
  const ByteCount logits_bytes = ByteCount(uint64_t(rows)) * uint64_t(model->config().vocab_size) * sizeof(float);
  // Copied now: JavaScript may transfer or collect the buffer while the worker runs.
  auto source = std::make_shared<TrackedVector<float>>(call_core(env, [&] {
    require_memory(logits_bytes, ErrorKind::Input, "logits for " + std::to_string(rows) + " rows");
    return owned_copy<float>(hidden.Data(), hidden.ElementLength(), "hidden");
  }));
  auto backend = backend_;
  return queue(float_result_worker(env, size_t(rows * model->config().vocab_size),
                                   [=](float* logits) { backend->project_logits(*model, source->data(), rows, logits); }));
}

// embed(tokenIds: Int32Array) → Promise<Float32Array> [count, hidden]
Napi::Value ModelWrap::Embed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  Napi::Int32Array token_ids;
  if (!optional_typed_array(info, 0, "tokenIds", &token_ids)) throw make_error(env, ErrorKind::Input, "tokenIds is required");
  call_core(env, [&] {
    require_memory(ByteCount(token_ids.ElementLength()) * uint64_t(model->config().hidden_dim) * sizeof(float),
                   ErrorKind::Input, "embeddings of " + std::to_string(token_ids.ElementLength()) + " tokens");
  });
  std::vector<int32_t> ids(token_ids.Data(), token_ids.Data() + token_ids.ElementLength());
  auto backend = backend_;
  return queue(float_result_worker(env, ids.size() * size_t(model->config().hidden_dim), [=](float* out) {
    backend->embed(*model, ids.data(), int64_t(ids.size()), out);
  }));
}

Napi::Value ModelWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  Napi::Object result = Napi::Object::New(env);
  result.Set("parameterCount", Napi::Number::New(env, double(model->parameter_count())));
  result.Set("weightBytes", Napi::Number::New(env, double(model->weight_bytes())));
  result.Set("dtype", Napi::String::New(env, dtype_name(model->config().dtype)));
  result.Set("backend", Napi::String::New(env, backend_->name()));
  result.Set("device", Napi::String::New(env, backend_->device()));
  result.Set("memoryAvailable", Napi::Number::New(env, double(call_core(env, [&] { return backend_->memory_available(); }))));
  return result;
}

Napi::Value ModelWrap::WeightNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto names = model(env)->weight_names();
  Napi::Array result = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) result.Set(uint32_t(i), Napi::String::New(env, names[i]));
  return result;
}

Napi::Value ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  model_.reset();
  return info.Env().Undefined();
}

}  // namespace falcon::binding
