#pragma once
#include <napi.h>

#include <memory>

#include "../core/mapped_file.h"

namespace falcon::binding {

// The JavaScript NativeMappedFile: a weight file mapped into memory for zero-copy loading.
class MappedFileWrap : public Napi::ObjectWrap<MappedFileWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit MappedFileWrap(const Napi::CallbackInfo& info);

  std::shared_ptr<MappedFile> file(Napi::Env env) const;

 private:
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<MappedFile> file_;
};

}  // namespace falcon::binding
