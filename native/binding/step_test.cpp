#include "step_test.h"

#include <memory>
#include <string>
#include <vector>

#include "../core/step_runner.h"
#include "addon_data.h"
#include "cache_wrap.h"
#include "model_wrap.h"
#include "napi_util.h"

namespace falcon::binding {

namespace {

// A StepBatch and the block tables it points into.
struct OwnedStep {
  StepBatch batch;
  std::vector<std::vector<int32_t>> tables;
};

template <typename ArrayType>
ArrayType typed_property(Napi::Env env, const Napi::Object& object, const char* key) {
  Napi::Value value = object.Get(key);
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != typed_array_kind<ArrayType>()) {
    throw make_error(env, ErrorKind::Input, std::string("spec.") + key + " must be a typed array of the right element type");
  }
  return value.As<ArrayType>();
}

int64_t integer_property(Napi::Env env, const Napi::Object& object, const char* key) {
  Napi::Value value = object.Get(key);
  const double number = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : 0.5;
  if (!(number >= -9007199254740991.0 && number <= 9007199254740991.0) || number != double(int64_t(number))) {
    throw make_error(env, ErrorKind::Input, std::string("sequence.") + key + " must be a safe integer");
  }
  return int64_t(number);
}

// Copies the spec: the step then owns everything it reads.
OwnedStep read_step(Napi::Env env, Napi::Value value) {
  if (!value.IsObject()) throw make_error(env, ErrorKind::Input, "spec must be an object");
  const Napi::Object spec = value.As<Napi::Object>();
  if (!spec.Get("sequences").IsArray()) throw make_error(env, ErrorKind::Input, "spec.sequences must be an array");
  const Napi::Array sequences = spec.Get("sequences").As<Napi::Array>();
  OwnedStep step;
  step.tables.resize(sequences.Length());
  for (uint32_t i = 0; i < sequences.Length(); ++i) {
    if (!sequences.Get(i).IsObject()) throw make_error(env, ErrorKind::Input, "spec.sequences entries must be objects");
    const Napi::Object sequence = sequences.Get(i).As<Napi::Object>();
    const Napi::Int32Array table = typed_property<Napi::Int32Array>(env, sequence, "blockTable");
    step.tables[i].assign(table.Data(), table.Data() + table.ElementLength());
    StepSequence entry;
    entry.block_table = step.tables[i].data();
    entry.block_count = int64_t(table.ElementLength());
    entry.start = integer_property(env, sequence, "start");
    entry.count = integer_property(env, sequence, "count");
    entry.rope_length = integer_property(env, sequence, "ropeLength");
    step.batch.sequences.push_back(entry);
  }
  const Napi::Int32Array ids = typed_property<Napi::Int32Array>(env, spec, "tokenIds");
  const Napi::Int32Array positions = typed_property<Napi::Int32Array>(env, spec, "positions");
  const Napi::Uint8Array valid = typed_property<Napi::Uint8Array>(env, spec, "valid");
  const Napi::Int32Array outputs = typed_property<Napi::Int32Array>(env, spec, "outputRows");
  step.batch.token_ids.assign(ids.Data(), ids.Data() + ids.ElementLength());
  step.batch.positions.assign(positions.Data(), positions.Data() + positions.ElementLength());
  step.batch.valid.assign(valid.Data(), valid.Data() + valid.ElementLength());
  step.batch.output_rows.assign(outputs.Data(), outputs.Data() + outputs.ElementLength());
  return step;
}

Napi::Float32Array floats(Napi::Env env, size_t count, const std::string& what) {
  call_core(env, [&] { require_memory(ByteCount(count) * sizeof(float), ErrorKind::Input, what); });
  return Napi::Float32Array::New(env, count);
}

}  // namespace

Napi::Value RunStepForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* data = env.GetInstanceData<AddonData>();
  ModelWrap* model_wrap = unwrap_instance<ModelWrap>(env, info[0], data->model_constructor, "model");
  std::shared_ptr<Model> model = model_wrap->model(env);
  CacheWrap* cache_wrap = unwrap_instance<CacheWrap>(env, info[1], data->cache_constructor, "cache");
  std::shared_ptr<KvCache> cache = cache_wrap->cache(env);
  if (cache_wrap->owner() != model.get()) throw make_error(env, ErrorKind::Input, "this cache was created for another model");
  OwnedStep step = read_step(env, info[2]);
  Napi::Float32Array hidden = floats(env, step.batch.output_rows.size() * size_t(model->config().hidden_dim), "hidden states");
  if (!cache->try_acquire()) throw make_error(env, ErrorKind::Input, "this cache is in use by another call");
  struct Release {
    KvCache& cache;
    ~Release() { cache.release(); }
  } release{*cache};
  call_core(env, [&] { model_wrap->backend()->step(*model, cache->pool(), step.batch, cache->workspace, hidden.Data()); });
  return hidden;
}

Napi::Value StepRunnerForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* data = env.GetInstanceData<AddonData>();
  ModelWrap* model_wrap = unwrap_instance<ModelWrap>(env, info[0], data->model_constructor, "model");
  std::shared_ptr<Model> model = model_wrap->model(env);
  const int64_t num_blocks = integer_argument(info, 1, "numBlocks");
  const DType kv_dtype = kv_dtype_value(env, info[2]);
  std::shared_ptr<StepRunner> runner = call_core(
      env, [&] { return std::shared_ptr<StepRunner>(make_model_step_runner(model, model_wrap->backend(), num_blocks, kv_dtype)); });
  Napi::Object object = Napi::Object::New(env);
  object.Set("numBlocks", Napi::Function::New(env, [runner](const Napi::CallbackInfo& call) -> Napi::Value {
               return Napi::Number::New(call.Env(), double(runner->num_blocks()));
             }));
  object.Set("vocabSize", Napi::Function::New(env, [runner](const Napi::CallbackInfo& call) -> Napi::Value {
               return Napi::Number::New(call.Env(), double(runner->vocab_size()));
             }));
  object.Set("run", Napi::Function::New(env, [runner](const Napi::CallbackInfo& call) -> Napi::Value {
               Napi::Env e = call.Env();
               OwnedStep step = read_step(e, call[0]);
               Napi::Float32Array logits = floats(e, step.batch.output_rows.size() * size_t(runner->vocab_size()), "logits");
               call_core(e, [&] { runner->run(step.batch, logits.Data()); });
               return logits;
             }));
  return object;
}

}  // namespace falcon::binding
