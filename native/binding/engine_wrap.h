#pragma once
#include <napi.h>

#include <memory>

#include "../core/engine.h"

namespace falcon::binding {

// A SamplerParams from { type, k, p, temperature, seed } (a ResolvedSamplerConfig: k and p may be
// null); throws a FALCON_INPUT error naming the field.
SamplerParams read_sampler_params(Napi::Env env, const Napi::Value& value);

// The JavaScript NativeEngine: a falcon::Engine whose events reach a JavaScript callback through a
// thread-safe function, one call per step. The function holds the event loop open only while
// requests are outstanding, so an idle engine never keeps a process alive; at environment teardown
// (process exit, worker.terminate()) a cleanup hook stops the engine thread before anything it uses
// goes away.
class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new NativeEngine(model | null, options, onEvents); null = the fake runner (options name it).
  explicit EngineWrap(const Napi::CallbackInfo& info);
  ~EngineWrap() override;

 private:
  struct Delivery;

  static Napi::Value WithFakeRunner(const Napi::CallbackInfo& info);
  static Napi::Value KvBlockBytes(const Napi::CallbackInfo& info);
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value StepLog(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  static void CallJs(napi_env env, napi_value callback, void* context, void* data);
  static void OnEnvironmentTeardown(void* self);
  Engine& engine(Napi::Env env) const;
  // Stops the engine thread and releases the thread-safe function; idempotent.
  void close();

  std::unique_ptr<Engine> engine_;
  napi_env env_ = nullptr;
  napi_threadsafe_function events_ = nullptr;
  Delivery* delivery_ = nullptr;  // owned by the thread-safe function (freed by its finalizer)
  bool cleanup_hook_ = false;
};

}  // namespace falcon::binding
