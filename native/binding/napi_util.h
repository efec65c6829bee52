#pragma once
// Helpers shared by the binding's classes: typed argument reading and falcon::Error → JS error.
#include <napi.h>

#include <memory>
#include <new>
#include <string>

#include "../core/dtype.h"
#include "../core/error.h"
#include "../core/memory.h"

namespace falcon::binding {

// The TypeScript façade turns `code` into its typed error classes.
inline const char* error_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Input: return "FALCON_INPUT";
    case ErrorKind::Config: return "FALCON_CONFIG";
    case ErrorKind::Weights: return "FALCON_WEIGHTS";
    case ErrorKind::State: return "FALCON_STATE";
  }
  return "FALCON_INTERNAL";
}

inline Napi::Error make_error(Napi::Env env, ErrorKind kind, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Value().Set("code", Napi::String::New(env, error_code(kind)));
  return error;
}

// An error caught on a worker thread, carried to the main thread where JS objects can be made.
struct PendingError {
  bool set = false;
  ErrorKind kind = ErrorKind::State;
  std::string message;

  void capture(ErrorKind k, const std::string& m) {
    set = true;
    kind = k;
    message = m;
  }
};

inline int64_t integer_argument(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (info.Length() <= index || !info[index].IsNumber()) {
    throw make_error(info.Env(), ErrorKind::Input, std::string(what) + " must be a number");
  }
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (value != double(int64_t(value))) {
    throw make_error(info.Env(), ErrorKind::Input, std::string(what) + " must be an integer");
  }
  return int64_t(value);
}

// A KV pool's storage dtype by name, float32 when `value` is undefined. Which dtypes a pool can store
// is the core's to say (KvPool refuses the others with a typed error).
inline DType kv_dtype_value(Napi::Env env, Napi::Value value) {
  if (value.IsUndefined()) return DType::Float32;
  DType dtype;
  if (!value.IsString() || !parse_dtype(value.As<Napi::String>().Utf8Value(), &dtype)) {
    throw make_error(env, ErrorKind::Input, "kvDtype must be 'float32', 'bfloat16' or 'float16'");
  }
  return dtype;
}

template <typename ArrayType> constexpr napi_typedarray_type typed_array_kind();
template <> constexpr napi_typedarray_type typed_array_kind<Napi::Int32Array>() { return napi_int32_array; }
template <> constexpr napi_typedarray_type typed_array_kind<Napi::Uint8Array>() { return napi_uint8_array; }
template <> constexpr napi_typedarray_type typed_array_kind<Napi::Float32Array>() { return napi_float32_array; }
template <> constexpr napi_typedarray_type typed_array_kind<Napi::Float64Array>() { return napi_float64_array; }

// Reads an optional typed array argument of exactly ArrayType; false when it is null or absent.
template <typename ArrayType>
inline bool optional_typed_array(const Napi::CallbackInfo& info, size_t index, const char* what, ArrayType* out) {
  if (info.Length() <= index || info[index].IsNull() || info[index].IsUndefined()) return false;
  if (!info[index].IsTypedArray()) throw make_error(info.Env(), ErrorKind::Input, std::string(what) + " must be a typed array");
  Napi::TypedArray array = info[index].As<Napi::TypedArray>();
  if (array.TypedArrayType() != typed_array_kind<ArrayType>()) {
    throw make_error(info.Env(), ErrorKind::Input, std::string(what) + " has the wrong element type");
  }
  *out = info[index].As<ArrayType>();
  return true;
}

// Runs core code on the main thread, turning its failures into typed JavaScript errors.
template <typename Call>
auto call_core(Napi::Env env, Call call) -> decltype(call()) {
  try {
    return call();
  } catch (const falcon::Error& e) {
    throw make_error(env, e.kind(), e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, ErrorKind::State, "out of memory");
  }
}

// An owned copy of a caller's buffer, for a worker that runs after JavaScript may have transferred
// or collected it.
template <typename Element>
TrackedVector<Element> owned_copy(const Element* data, size_t count, const std::string& what) {
  require_memory(ByteCount(count) * sizeof(Element), ErrorKind::Input, "a copy of " + what);
  return TrackedVector<Element>(data, data + count);
}

// Hands a vector to JavaScript without copying; the ArrayBuffer frees it (and so takes it off the
// live count) when JavaScript collects it. Should creating the buffer fail (an environment shutting
// down), `values` still owns the vector and frees it.
template <typename Element>
inline Napi::ArrayBuffer adopt_buffer(Napi::Env env, std::unique_ptr<TrackedVector<Element>> values) {
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
      env, values->data(), values->size() * sizeof(Element),
      [](Napi::Env, void*, TrackedVector<Element>* owned) { delete owned; }, values.get());
  values.release();
  return buffer;
}

inline Napi::Float32Array adopt_floats(Napi::Env env, std::unique_ptr<TrackedVector<float>> values) {
  const size_t count = values->size();
  return Napi::Float32Array::New(env, count, adopt_buffer(env, std::move(values)), 0);
}

}  // namespace falcon::binding
