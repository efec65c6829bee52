#pragma once
// Helpers shared by the binding's classes: typed argument reading and falcon::Error → JS error.
#include <napi.h>

#include <string>

#include "../core/error.h"

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

template <typename ArrayType> constexpr napi_typedarray_type typed_array_kind();
template <> constexpr napi_typedarray_type typed_array_kind<Napi::Int32Array>() { return napi_int32_array; }
template <> constexpr napi_typedarray_type typed_array_kind<Napi::Uint8Array>() { return napi_uint8_array; }
template <> constexpr napi_typedarray_type typed_array_kind<Napi::Float32Array>() { return napi_float32_array; }

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

// Hands a heap vector to JavaScript as a Float32Array without copying; the ArrayBuffer frees it.
inline Napi::Float32Array adopt_floats(Napi::Env env, std::vector<float>* values) {
  const size_t count = values->size();
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
      env, values->data(), count * sizeof(float), [](Napi::Env, void*, std::vector<float>* owned) { delete owned; },
      values);
  return Napi::Float32Array::New(env, count, buffer, 0);
}

}  // namespace falcon::binding
