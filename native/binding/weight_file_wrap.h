#pragma once
#include <napi.h>

#include <memory>

#include "../core/weight_file.h"

namespace falcon::binding {

// The JavaScript NativeWeightFile: a weight file open for loading.
class WeightFileWrap : public Napi::ObjectWrap<WeightFileWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit WeightFileWrap(const Napi::CallbackInfo& info);

  std::shared_ptr<WeightFile> file(Napi::Env env) const;

 private:
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<WeightFile> file_;
};

}  // namespace falcon::binding
