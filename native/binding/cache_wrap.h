#pragma once
#include <napi.h>

#include <memory>

#include "../core/kv_cache.h"

namespace falcon::binding {

// The JavaScript NativeKvCache: per-sequence key/value storage for one model.
class CacheWrap : public Napi::ObjectWrap<CacheWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit CacheWrap(const Napi::CallbackInfo& info);

  std::shared_ptr<KvCache> cache(Napi::Env env) const;
  const void* owner() const { return owner_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value ByteSize(const Napi::CallbackInfo& info);

  std::shared_ptr<KvCache> cache_;
  const void* owner_ = nullptr;  // the Model it was made for; a cache only fits its own model
};

}  // namespace falcon::binding
