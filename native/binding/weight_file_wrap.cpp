#include "weight_file_wrap.h"

#include "napi_util.h"

namespace falcon::binding {

Napi::Function WeightFileWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeWeightFile",
                     {
                         InstanceMethod<&WeightFileWrap::Size>("size"),
                         InstanceMethod<&WeightFileWrap::Dispose>("dispose"),
                     });
}

// new NativeWeightFile(path)
WeightFileWrap::WeightFileWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WeightFileWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw make_error(env, ErrorKind::Weights, "NativeWeightFile needs a path");
  file_ = call_core(env, [&] { return WeightFile::open(info[0].As<Napi::String>().Utf8Value()); });
}

std::shared_ptr<WeightFile> WeightFileWrap::file(Napi::Env env) const {
  if (!file_) throw make_error(env, ErrorKind::State, "this weight file has been disposed");
  return file_;
}

Napi::Value WeightFileWrap::Size(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(file(info.Env())->size()));
}

// Loads in flight hold their own reference; this only drops the JavaScript handle's share.
Napi::Value WeightFileWrap::Dispose(const Napi::CallbackInfo& info) {
  file_.reset();
  return info.Env().Undefined();
}

}  // namespace falcon::binding
