#include "matmul_test.h"

#include <memory>
#include <string>

#include "../core/memory.h"
#include "../core/weights.h"
#include "../cpu/ops.h"
#include "napi_util.h"

namespace falcon::binding {

Napi::Value MatmulForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DType dtype;
  if (!info[0].IsString() || !parse_dtype(info[0].As<Napi::String>().Utf8Value(), &dtype) || dtype == DType::Float64) {
    throw make_error(env, ErrorKind::Input, "dtype must be a weight dtype");
  }
  const int64_t outputs = integer_argument(info, 2, "outputs");
  const int64_t cols = integer_argument(info, 3, "cols");
  const int64_t rows = integer_argument(info, 5, "rows");
  constexpr int64_t kMaxSide = int64_t(1) << 16;
  if (outputs < 1 || cols < 1 || rows < 1 || outputs > kMaxSide || cols > kMaxSide || rows > kMaxSide) {
    throw make_error(env, ErrorKind::Input, "outputs, cols and rows must be in [1, 65536]");
  }
  Napi::Float32Array weights, x, bias, y_in;
  const bool has_weights = optional_typed_array(info, 1, "weights", &weights);
  const bool has_x = optional_typed_array(info, 4, "x", &x);
  const bool has_bias = optional_typed_array(info, 6, "bias", &bias);
  const bool accumulate = optional_typed_array(info, 8, "y", &y_in);
  if (!has_weights || weights.ElementLength() != size_t(outputs * cols) || !has_x || x.ElementLength() != size_t(rows * cols) ||
      (has_bias && bias.ElementLength() != size_t(outputs)) || (accumulate && y_in.ElementLength() != size_t(rows * outputs))) {
    throw make_error(env, ErrorKind::Input, "weights, x, bias and y must be Float32Arrays of [outputs, cols], [rows, cols], [outputs] and [rows, outputs]");
  }
  auto y = std::make_unique<TrackedVector<float>>(size_t(rows * outputs));
  call_core(env, [&] {
    require_memory(matrix_memory_bytes(dtype, outputs, cols), ErrorKind::Input, "test matrix");
    WeightMatrix w = allocate_matrix(dtype, outputs, cols);
    for (int64_t n = 0; n < outputs; ++n) store_matrix_row(w, n, weights.Data() + n * cols);
    cpu::PackedActivations packed;
    cpu::pack_activations(x.Data(), rows, cols, dtype, nullptr, packed);
    cpu::Epilogue epilogue;
    epilogue.bias = has_bias ? bias.Data() : nullptr;
    epilogue.gelu = info[7].ToBoolean().Value();
    epilogue.accumulate = accumulate;
    if (accumulate) std::copy(y_in.Data(), y_in.Data() + rows * outputs, y->data());
    cpu::matmul(packed, w, epilogue, y->data());
  });
  return adopt_floats(env, std::move(y));
}

}  // namespace falcon::binding
