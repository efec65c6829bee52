#include "engine_wrap.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../core/fake_step_runner.h"
#include "addon_data.h"
#include "model_wrap.h"
#include "napi_util.h"

namespace falcon::binding {

// The thread-safe function's context: what delivering events needs, alive until the function is
// finalized (which may be after the wrap is gone).
struct EngineWrap::Delivery {
  int64_t outstanding = 0;  // submitted requests without their final event yet (main thread only)
  bool referenced = false;
  napi_threadsafe_function function = nullptr;
};

SamplerParams read_sampler_params(Napi::Env env, const Napi::Value& value) {
  if (!value.IsObject()) throw make_error(env, ErrorKind::Input, "sampler config must be an object");
  Napi::Object config = value.As<Napi::Object>();
  const std::string type = config.Get("type").IsString() ? config.Get("type").As<Napi::String>().Utf8Value() : "";
  SamplerParams params;
  if (type == "greedy") params.kind = SamplerKind::Greedy;
  else if (type == "topK") params.kind = SamplerKind::TopK;
  else if (type == "topP") params.kind = SamplerKind::TopP;
  else if (type == "temperature") params.kind = SamplerKind::Temperature;
  else if (type == "random") params.kind = SamplerKind::Random;
  else throw make_error(env, ErrorKind::Input, "sampler type must be greedy, topK, topP, temperature or random");
  auto number = [&](const char* field, double fallback) {
    Napi::Value field_value = config.Get(field);
    if (field_value.IsNull() || field_value.IsUndefined()) return fallback;
    if (!field_value.IsNumber()) throw make_error(env, ErrorKind::Input, std::string("sampler ") + field + " must be a number");
    return field_value.As<Napi::Number>().DoubleValue();
  };
  const double k = number("k", 0);
  if (!(k == std::floor(k))) throw make_error(env, ErrorKind::Input, "sampler k must be an integer");
  // Only min(k, allowed) matters: a k past int64 is as good as int64's largest.
  params.k = k >= 9.2e18 ? std::numeric_limits<int64_t>::max() : k <= -9.2e18 ? -1 : int64_t(k);
  params.p = number("p", 1);
  params.temperature = number("temperature", 1);
  params.seed = number("seed", 0);
  call_core(env, [&] { validate_sampler_params(params); });
  return params;
}

namespace {

using EventBatch = std::vector<EngineEvent>;

int64_t integer_field(Napi::Env env, Napi::Object object, const char* key, int64_t fallback, int64_t low, int64_t high) {
  Napi::Value value = object.Get(key);
  if (value.IsUndefined()) return fallback;
  if (!value.IsNumber()) throw make_error(env, ErrorKind::Input, std::string(key) + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  if (!(number >= double(low) && number <= double(high)) || number != double(int64_t(number))) {
    throw make_error(env, ErrorKind::Input,
                     std::string(key) + " must be an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]");
  }
  return int64_t(number);
}

bool boolean_field(Napi::Env env, Napi::Object object, const char* key, bool fallback) {
  Napi::Value value = object.Get(key);
  if (value.IsUndefined()) return fallback;
  if (!value.IsBoolean()) throw make_error(env, ErrorKind::Input, std::string(key) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

Napi::Object object_argument(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (info.Length() <= index || !info[index].IsObject()) throw make_error(info.Env(), ErrorKind::Input, std::string(what) + " must be an object");
  return info[index].As<Napi::Object>();
}

EngineConfig read_engine_config(Napi::Env env, Napi::Object options) {
  EngineConfig config;
  config.max_batch_tokens = integer_field(env, options, "maxBatchTokens", 512, 1, int64_t(1) << 20);
  config.max_sequences = integer_field(env, options, "maxSequences", 64, 1, 65536);
  config.prefix_caching = boolean_field(env, options, "prefixCaching", true);
  config.record_steps = boolean_field(env, options, "recordSteps", false);
  return config;
}

// Copies an Int32Array or an array of integers.
template <typename Vector>
Vector read_ids(Napi::Env env, Napi::Value value, const char* what, size_t limit) {
  Vector ids;
  if (value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
    Napi::Int32Array array = value.As<Napi::Int32Array>();
    if (array.ElementLength() > limit) throw make_error(env, ErrorKind::Input, std::string(what) + " is too long");
    call_core(env, [&] { require_memory(ByteCount(array.ElementLength()) * sizeof(int32_t), ErrorKind::Input, what); });
    ids.assign(array.Data(), array.Data() + array.ElementLength());
    return ids;
  }
  if (!value.IsArray()) throw make_error(env, ErrorKind::Input, std::string(what) + " must be an Int32Array or an array of integers");
  Napi::Array array = value.As<Napi::Array>();
  if (array.Length() > limit) throw make_error(env, ErrorKind::Input, std::string(what) + " is too long");
  call_core(env, [&] { require_memory(ByteCount(array.Length()) * sizeof(int32_t), ErrorKind::Input, what); });
  ids.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    const double id = item.IsNumber() ? item.As<Napi::Number>().DoubleValue() : -1;
    if (!(id >= 0 && id <= 2147483647.0) || id != double(int64_t(id))) {
      throw make_error(env, ErrorKind::Input, std::string(what) + "[" + std::to_string(i) + "] must be a token id");
    }
    ids.push_back(int32_t(id));
  }
  return ids;
}

Napi::Object event_object(Napi::Env env, EngineEvent& event) {
  Napi::Object object = Napi::Object::New(env);
  object.Set("id", double(event.request));
  object.Set("token", event.token);
  object.Set("finish", finish_reason_name(event.finish));
  if (event.has_logprob) {
    object.Set("logprob", event.logprob);
    Napi::Array top = Napi::Array::New(env, event.top.size());
    for (size_t i = 0; i < event.top.size(); ++i) {
      Napi::Object entry = Napi::Object::New(env);
      entry.Set("token", event.top[i].token);
      entry.Set("logprob", event.top[i].logprob);
      top.Set(uint32_t(i), entry);
    }
    object.Set("top", top);
  }
  if (!event.logits.empty()) {
    object.Set("logits", adopt_floats(env, std::make_unique<TrackedVector<float>>(std::move(event.logits))));
  }
  if (event.finish == FinishReason::Error) {
    Napi::Object error = Napi::Object::New(env);
    error.Set("code", error_code(event.error_kind));
    error.Set("message", event.error);
    object.Set("error", error);
  }
  return object;
}

}  // namespace

Napi::Function EngineWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeEngine",
                     {
                         StaticMethod<&EngineWrap::WithFakeRunner>("withFakeRunner"),
                         StaticMethod<&EngineWrap::KvBlockBytes>("kvBlockBytes"),
                         InstanceMethod<&EngineWrap::Submit>("submit"),
                         InstanceMethod<&EngineWrap::Cancel>("cancel"),
                         InstanceMethod<&EngineWrap::Pause>("pause"),
                         InstanceMethod<&EngineWrap::Resume>("resume"),
                         InstanceMethod<&EngineWrap::Stats>("stats"),
                         InstanceMethod<&EngineWrap::StepLog>("stepLog"),
                         InstanceMethod<&EngineWrap::Close>("close"),
                     });
}

EngineWrap::EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  Napi::Object options = object_argument(info, 1, "engine options");
  if (info.Length() < 3 || !info[2].IsFunction()) throw make_error(env, ErrorKind::Input, "onEvents must be a function");
  EngineConfig config = read_engine_config(env, options);
  std::unique_ptr<StepRunner> runner;
  if (info[0].IsNull()) {
    FakeRunnerOptions fake;
    fake.vocab_size = integer_field(env, options, "vocabSize", 0, 1, int64_t(1) << 24);
    fake.num_blocks = integer_field(env, options, "numBlocks", 0, 1, int64_t(1) << 24);
    fake.step_delay_ms = integer_field(env, options, "stepDelayMs", 0, 0, 10000);
    fake.fail_token = int32_t(integer_field(env, options, "failToken", -1, -1, INT32_MAX));
    runner = call_core(env, [&] { return std::make_unique<FakeStepRunner>(fake); });
  } else {
    auto* data = env.GetInstanceData<AddonData>();
    ModelWrap* model_wrap = unwrap_instance<ModelWrap>(env, info[0], data->model_constructor, "model");
    std::shared_ptr<Model> model = model_wrap->model(env);
    const int64_t num_blocks = integer_field(env, options, "numBlocks", 0, 1, INT32_MAX);
    const ModelConfig& model_config = model->config();
    config.length_dependent_rotary =
        model_config.position_encoding == PositionEncoding::Rotary && model_config.rope_scaling == RopeScaling::Dynamic;
    const DType kv_dtype = kv_dtype_value(env, options.Get("kvDtype"));
    runner = call_core(env, [&] { return make_model_step_runner(model, model_wrap->backend(), num_blocks, kv_dtype); });
  }

  delivery_ = new Delivery();
  napi_status status = napi_create_threadsafe_function(
      env, info[2], nullptr, Napi::String::New(env, "falcon-engine-events"), 0, 1, delivery_,
      [](napi_env, void* finalize_data, void*) { delete static_cast<Delivery*>(finalize_data); }, delivery_, CallJs,
      &events_);
  if (status != napi_ok) {
    delete delivery_;
    delivery_ = nullptr;
    throw make_error(env, ErrorKind::State, "could not create the engine's event channel");
  }
  delivery_->function = events_;
  // An idle engine does not keep the process alive.
  napi_unref_threadsafe_function(env, events_);

  napi_threadsafe_function events = events_;
  EventSink sink = [events](std::vector<EngineEvent>&& batch) {
    auto* owned = new EventBatch(std::move(batch));
    // Never blocks (the queue is unbounded); fails only while the environment shuts down.
    if (napi_call_threadsafe_function(events, owned, napi_tsfn_nonblocking) != napi_ok) delete owned;
  };
  try {
    engine_ = call_core(env, [&] { return std::make_unique<Engine>(std::move(runner), config, std::move(sink)); });
  } catch (...) {
    napi_release_threadsafe_function(events_, napi_tsfn_abort);
    events_ = nullptr;
    delivery_ = nullptr;
    throw;
  }
  napi_add_env_cleanup_hook(env, OnEnvironmentTeardown, this);
  cleanup_hook_ = true;
}

EngineWrap::~EngineWrap() {
  close();
  if (cleanup_hook_) napi_remove_env_cleanup_hook(env_, OnEnvironmentTeardown, this);
}

void EngineWrap::OnEnvironmentTeardown(void* self) {
  auto* wrap = static_cast<EngineWrap*>(self);
  wrap->cleanup_hook_ = false;
  wrap->close();
}

void EngineWrap::close() {
  if (engine_) {
    engine_->shutdown();  // joins the engine thread: nothing calls the thread-safe function after this
    engine_.reset();
  }
  if (events_) {
    // Events still queued are freed by CallJs without a JavaScript environment.
    napi_release_threadsafe_function(events_, napi_tsfn_abort);
    events_ = nullptr;
    delivery_ = nullptr;
  }
}

Engine& EngineWrap::engine(Napi::Env env) const {
  if (!engine_) throw make_error(env, ErrorKind::State, "this engine has been closed (disposed)");
  return *engine_;
}

void EngineWrap::CallJs(napi_env raw_env, napi_value callback, void* context, void* data) {
  std::unique_ptr<EventBatch> batch(static_cast<EventBatch*>(data));
  if (raw_env == nullptr || callback == nullptr) return;  // the function is being torn down
  Napi::Env env(raw_env);
  Napi::HandleScope scope(env);
  auto* delivery = static_cast<Delivery*>(context);
  Napi::Array events = Napi::Array::New(env, batch->size());
  int64_t finished = 0;
  for (size_t i = 0; i < batch->size(); ++i) {
    EngineEvent& event = (*batch)[i];
    if (event.finish != FinishReason::None) ++finished;
    events.Set(uint32_t(i), event_object(env, event));
  }
  delivery->outstanding -= finished;
  if (delivery->outstanding == 0 && delivery->referenced) {
    napi_unref_threadsafe_function(raw_env, delivery->function);
    delivery->referenced = false;
  }
  try {
    Napi::Function(env, callback).Call({events});
  } catch (const Napi::Error& error) {
    // The callback threw: report it as an uncaught exception, as for any other callback.
    error.ThrowAsJavaScriptException();
  }
}

Napi::Value EngineWrap::WithFakeRunner(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
    throw make_error(env, ErrorKind::Input, "withFakeRunner(options, onEvents)");
  }
  return info.This().As<Napi::Function>().New({env.Null(), info[0], info[1]});
}

Napi::Value EngineWrap::KvBlockBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* data = env.GetInstanceData<AddonData>();
  std::shared_ptr<Model> model = unwrap_instance<ModelWrap>(env, info[0], data->model_constructor, "model")->model(env);
  const DType kv_dtype = kv_dtype_value(env, info[1]);
  return Napi::Number::New(env, double(call_core(env, [&] { return kv_block_bytes(model->config(), kv_dtype); }).value()));
}

// submit({ promptIds, maxNewTokens, stopTokenIds, allowedVocabulary, sampler, logprobs, returnLogits }) → id
Napi::Value EngineWrap::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine& engine = this->engine(env);
  Napi::Object object = object_argument(info, 0, "request");
  EngineRequest request;
  request.prompt = read_ids<TrackedVector<int32_t>>(env, object.Get("promptIds"), "request.promptIds", size_t(1) << 30);
  request.max_new_tokens = integer_field(env, object, "maxNewTokens", 0, 1, int64_t(1) << 30);
  Napi::Value stops = object.Get("stopTokenIds");
  if (!stops.IsUndefined()) request.stop_token_ids = read_ids<std::vector<int32_t>>(env, stops, "request.stopTokenIds", 1 << 20);
  request.allowed_vocabulary = integer_field(env, object, "allowedVocabulary", 0, 0, engine.vocab_size());
  request.sampler = read_sampler_params(env, object.Get("sampler"));
  request.top_logprobs = integer_field(env, object, "logprobs", -1, -1, kMaxTopLogprobs);
  request.return_logits = boolean_field(env, object, "returnLogits", false);
  const uint64_t id = call_core(env, [&] { return engine.submit(std::move(request)); });
  if (delivery_->outstanding++ == 0 && !delivery_->referenced) {
    napi_ref_threadsafe_function(env, events_);
    delivery_->referenced = true;
  }
  return Napi::Number::New(env, double(id));
}

Napi::Value EngineWrap::Cancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t id = integer_argument(info, 0, "id");
  if (id > 0) engine(env).cancel(uint64_t(id));
  return env.Undefined();
}

Napi::Value EngineWrap::Pause(const Napi::CallbackInfo& info) {
  engine(info.Env()).pause();
  return info.Env().Undefined();
}

// resume() or resume(steps)
Napi::Value EngineWrap::Resume(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t steps = -1;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    steps = integer_argument(info, 0, "steps");
    if (steps < 0) throw make_error(env, ErrorKind::Input, "steps must be a non-negative integer");
  }
  engine(env).resume(steps);
  return env.Undefined();
}

Napi::Value EngineWrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const EngineStats stats = engine(env).stats();
  Napi::Object result = Napi::Object::New(env);
  result.Set("waiting", double(stats.waiting));
  result.Set("running", double(stats.running));
  Napi::Object blocks = Napi::Object::New(env);
  blocks.Set("total", double(stats.blocks.total));
  blocks.Set("used", double(stats.blocks.used));
  blocks.Set("free", double(stats.blocks.free));
  blocks.Set("cached", double(stats.blocks.cached));
  result.Set("kvBlocks", blocks);
  result.Set("prefixHitTokens", double(stats.prefix_hit_tokens));
  result.Set("preemptions", double(stats.preemptions));
  result.Set("generatedTokens", double(stats.generated_tokens));
  result.Set("tokensPerSecond", stats.tokens_per_second);
  result.Set("steps", double(stats.steps));
  result.Set("wholeLogitsRows", double(stats.whole_logits_rows));
  result.Set("rankedLogitsRows", double(stats.ranked_logits_rows));
  result.Set("drawnTokenRows", double(stats.drawn_token_rows));
  return result;
}

Napi::Value EngineWrap::StepLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<StepRecord> log = engine(env).take_step_log();
  Napi::Array steps = Napi::Array::New(env, log.size());
  for (size_t s = 0; s < log.size(); ++s) {
    Napi::Array chunks = Napi::Array::New(env, log[s].chunks.size());
    for (size_t c = 0; c < log[s].chunks.size(); ++c) {
      Napi::Object chunk = Napi::Object::New(env);
      chunk.Set("id", double(log[s].chunks[c].request));
      chunk.Set("start", double(log[s].chunks[c].start));
      chunk.Set("count", double(log[s].chunks[c].count));
      chunks.Set(uint32_t(c), chunk);
    }
    Napi::Array preempted = Napi::Array::New(env, log[s].preempted.size());
    for (size_t p = 0; p < log[s].preempted.size(); ++p) preempted.Set(uint32_t(p), double(log[s].preempted[p]));
    Napi::Object step = Napi::Object::New(env);
    step.Set("chunks", chunks);
    step.Set("preempted", preempted);
    steps.Set(uint32_t(s), step);
  }
  return steps;
}

Napi::Value EngineWrap::Close(const Napi::CallbackInfo& info) {
  close();
  return info.Env().Undefined();
}

}  // namespace falcon::binding
