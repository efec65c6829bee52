#pragma once
#include <napi.h>

#include <memory>

#include "../core/backend.h"
#include "../core/model.h"

namespace falcon::binding {

// Reads the JavaScript NativeModelConfig; throws a FALCON_CONFIG error naming a missing or mistyped field.
ModelConfig read_config(const Napi::Env& env, const Napi::Object& object);

// The JavaScript NativeModel: one Model plus the backend that runs it.
class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit ModelWrap(const Napi::CallbackInfo& info);

  // Throws a JS error if dispose() was called.
  std::shared_ptr<Model> model(Napi::Env env) const;
  std::shared_ptr<Backend> backend() const { return backend_; }

 private:
  Napi::Value SetWeight(const Napi::CallbackInfo& info);
  Napi::Value SetWeightFromFile(const Napi::CallbackInfo& info);
  Napi::Value SetWeightFromGgml(const Napi::CallbackInfo& info);
  Napi::Value GetWeight(const Napi::CallbackInfo& info);
  Napi::Value InitializeRandom(const Napi::CallbackInfo& info);
  Napi::Value RequireComplete(const Napi::CallbackInfo& info);
  Napi::Value PrepareWeights(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value ProjectLogits(const Napi::CallbackInfo& info);
  Napi::Value Embed(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value WeightNames(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  // Workers hold their own references, so dispose() during a call frees memory when the call ends.
  std::shared_ptr<Model> model_;
  std::shared_ptr<Backend> backend_;
};

}  // namespace falcon::binding
