#include "mapped_file_wrap.h"

#include "napi_util.h"

namespace falcon::binding {

Napi::Function MappedFileWrap::Define(Napi::Env env) {
  return DefineClass(env, "NativeMappedFile",
                     {
                         InstanceMethod<&MappedFileWrap::Size>("size"),
                         InstanceMethod<&MappedFileWrap::Dispose>("dispose"),
                     });
}

// new NativeMappedFile(path)
MappedFileWrap::MappedFileWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MappedFileWrap>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw make_error(env, ErrorKind::Weights, "NativeMappedFile needs a path");
  try {
    file_ = MappedFile::open(info[0].As<Napi::String>().Utf8Value());
  } catch (const falcon::Error& e) {
    throw make_error(env, e.kind(), e.what());
  }
}

std::shared_ptr<MappedFile> MappedFileWrap::file(Napi::Env env) const {
  if (!file_) throw make_error(env, ErrorKind::State, "this mapped file has been disposed");
  return file_;
}

Napi::Value MappedFileWrap::Size(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(file(info.Env())->size()));
}

// Loads in flight hold their own reference; this only drops the JavaScript handle's share.
Napi::Value MappedFileWrap::Dispose(const Napi::CallbackInfo& info) {
  file_.reset();
  return info.Env().Undefined();
}

}  // namespace falcon::binding
