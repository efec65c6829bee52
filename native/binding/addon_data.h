#pragma once
#include <napi.h>

namespace falcon::binding {

// Per-environment constructors, so arguments can be checked to really be our native objects.
struct AddonData {
  Napi::FunctionReference model_constructor;
  Napi::FunctionReference cache_constructor;
  Napi::FunctionReference weight_file_constructor;
};

template <typename Wrap>
Wrap* unwrap_instance(Napi::Env env, Napi::Value value, Napi::FunctionReference& constructor, const char* what) {
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(constructor.Value())) {
    throw Napi::TypeError::New(env, std::string(what) + " must be a native object created by this library");
  }
  return Wrap::Unwrap(value.As<Napi::Object>());
}

}  // namespace falcon::binding
