#include "cache_wrap.h"

#include "addon_data.h"
#include "model_wrap.h"
#include "napi_util.h"

namespace falcon::binding {

Napi::Function CacheWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeKvCache",
                     {
                         InstanceMethod<&CacheWrap::Dispose>("dispose"),
                         InstanceMethod<&CacheWrap::ByteSize>("byteSize"),
                     });
}

// new NativeKvCache(model, batchSize, maxLength)
CacheWrap::CacheWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CacheWrap>(info) {
  Napi::Env env = info.Env();
  auto* data = env.GetInstanceData<AddonData>();
  ModelWrap* model_wrap = unwrap_instance<ModelWrap>(env, info[0], data->model_constructor, "model");
  auto model = model_wrap->model(env);
  const int64_t batch_size = integer_argument(info, 1, "batchSize");
  const int64_t max_length = integer_argument(info, 2, "maxLength");
  auto backend = model_wrap->backend();
  cache_ = call_core(env, [&] { return std::make_shared<KvCache>(model->config(), batch_size, max_length, backend.get()); });
  owner_ = model.get();
}

std::shared_ptr<KvCache> CacheWrap::cache(Napi::Env env) const {
  if (!cache_) throw make_error(env, ErrorKind::State, "this cache has been disposed");
  return cache_;
}

Napi::Value CacheWrap::Dispose(const Napi::CallbackInfo& info) {
  cache_.reset();
  return info.Env().Undefined();
}

Napi::Value CacheWrap::ByteSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(cache(info.Env())->byte_size()));
}

}  // namespace falcon::binding
