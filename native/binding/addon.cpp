// Entry point of the falcon-native addon: registers the native classes and process-wide settings.
#include <napi.h>

#include "../core/thread_pool.h"
#include "addon_data.h"
#include "cache_wrap.h"
#include "mapped_file_wrap.h"
#include "model_wrap.h"
#include "napi_util.h"

namespace falcon::binding {
namespace {

Napi::Value NumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), global_thread_pool().num_threads());
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  const int64_t threads = integer_argument(info, 0, "threads");
  if (threads < 1 || threads > 1024) throw make_error(info.Env(), ErrorKind::Input, "threads must be in [1, 1024]");
  set_global_thread_count(int(threads));
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function model = ModelWrap::Define(env);
  Napi::Function cache = CacheWrap::Define(env);
  data->model_constructor = Napi::Persistent(model);
  data->cache_constructor = Napi::Persistent(cache);
  Napi::Function mapped_file = MappedFileWrap::Define(env);
  data->mapped_file_constructor = Napi::Persistent(mapped_file);
  env.SetInstanceData(data);
  exports.Set("NativeModel", model);
  exports.Set("NativeKvCache", cache);
  exports.Set("NativeMappedFile", mapped_file);
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  return exports;
}

}  // namespace falcon::binding

static Napi::Object InitFalconNative(Napi::Env env, Napi::Object exports) { return falcon::binding::Init(env, exports); }

NODE_API_MODULE(falcon_native, InitFalconNative)
