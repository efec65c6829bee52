// Compiled twice: as itself, over the emulated kernels and runtime (cudaEmulationForTest, every
// build), and by cuda_test_real.cpp with FALCON_CUDA_TEST_REAL, over the real kernels and the CUDA
// runtime (cudaDeviceForTest, CMake builds with nvcc only). The same spec objects drive both, so the
// cuda-*.test.ts files run each case on each.
#include "cuda_test.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/kv_pool.h"
#include "../core/model_config.h"
#include "../core/sampler.h"
#include "../core/weights.h"
#include "../cpu/ops.h"
#include "../cuda/cuda_errors.h"
#include "../cuda/device_runtime.h"
#include "../cuda/kernels/kernels.h"
#include "../cuda/kernels/probes.h"
#include "../cuda/rotary_scaling.h"
#include "engine_wrap.h"
#include "napi_util.h"

namespace falcon::binding {

namespace {

using falcon::cuda::CopyKind;
using falcon::cuda::DeviceRuntime;
using falcon::cuda::DeviceStream;

#if defined(FALCON_CUDA_TEST_REAL)
namespace gpu = falcon::cuda;

// The real GPU, device 0; throws Error(Config) with the fix when there is none (no driver, no GPU).
std::unique_ptr<DeviceRuntime> open_runtime() { return falcon::cuda::make_cuda_runtime(0); }
#else
namespace gpu = falcon::cuda::emulated;

// Enough for every test shape; small enough that a runaway size is refused, not allocated.
constexpr uint64_t kEmulatedDeviceBytes = uint64_t(256) << 20;

std::unique_ptr<DeviceRuntime> open_runtime(uint64_t capacity = kEmulatedDeviceBytes) {
  return falcon::cuda::make_emulated_runtime(capacity);
}
#endif

// A device and a stream on it, for one call. The real runtime does not track allocations, so the
// device frees its own (the emulated runtime would free them anyway).
class Device {
 public:
  explicit Device(std::unique_ptr<DeviceRuntime> runtime = open_runtime())
      : runtime_(std::move(runtime)), stream_(runtime_->create_stream()) {}
  ~Device() {
    try {
      runtime_->synchronize(stream_);
    } catch (const Error&) {
      // The call already failed and reports that error; what is left is freed below regardless.
    }
    for (void* pointer : allocations_) {
      try {
        runtime_->free(pointer);
      } catch (const Error&) {
        // A device in an error state keeps its memory until the context goes; nothing to report here.
      }
    }
    try {
      runtime_->destroy_stream(stream_);
    } catch (const Error&) {
      // As above.
    }
  }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  DeviceRuntime& runtime() { return *runtime_; }
  DeviceStream* stream() { return stream_; }
  cudaStream_t native() { return static_cast<cudaStream_t>(runtime_->native_stream(stream_)); }

  template <typename T>
  T* allocate(size_t count) {
    allocations_.reserve(allocations_.size() + 1);
    T* pointer = static_cast<T*>(runtime_->allocate(count * sizeof(T)));
    allocations_.push_back(pointer);
    return pointer;
  }
  template <typename T>
  T* upload(const std::vector<T>& values) {
    T* pointer = allocate<T>(values.size());
    runtime_->copy(pointer, values.data(), values.size() * sizeof(T), CopyKind::HostToDevice, stream_);
    return pointer;
  }
  template <typename T>
  std::vector<T> download(const T* pointer, size_t count) {
    std::vector<T> values(count);
    runtime_->copy(values.data(), pointer, count * sizeof(T), CopyKind::DeviceToHost, stream_);
    runtime_->synchronize(stream_);
    return values;
  }

 private:
  std::unique_ptr<DeviceRuntime> runtime_;
  DeviceStream* stream_;
  std::vector<void*> allocations_;
};

Napi::Error input_error(Napi::Env env, const std::string& message) { return make_error(env, ErrorKind::Input, message); }

Napi::Object spec_object(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) throw input_error(info.Env(), "a spec object is required");
  return info[0].As<Napi::Object>();
}

double number(Napi::Env env, const Napi::Object& spec, const char* key) {
  const Napi::Value value = spec.Get(key);
  if (!value.IsNumber()) throw input_error(env, std::string("spec.") + key + " must be a number");
  return value.As<Napi::Number>().DoubleValue();
}

int64_t integer(Napi::Env env, const Napi::Object& spec, const char* key, int64_t low, int64_t high) {
  const double value = number(env, spec, key);
  if (!(value >= double(low) && value <= double(high)) || value != double(int64_t(value))) {
    throw input_error(env, std::string("spec.") + key + " must be an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]");
  }
  return int64_t(value);
}

bool flag(const Napi::Object& spec, const char* key) { return spec.Get(key).ToBoolean().Value(); }

std::string text(Napi::Env env, const Napi::Object& spec, const char* key) {
  const Napi::Value value = spec.Get(key);
  if (!value.IsString()) throw input_error(env, std::string("spec.") + key + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

// A typed array property copied out, of exactly `count` elements (any count when count < 0);
// absent or null gives an empty vector when `optional`.
template <typename ArrayType, typename T = typename std::remove_pointer_t<decltype(std::declval<ArrayType>().Data())>>
std::vector<T> array(Napi::Env env, const Napi::Object& spec, const char* key, int64_t count, bool optional = false) {
  const Napi::Value value = spec.Get(key);
  if (optional && (value.IsUndefined() || value.IsNull())) return {};
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != typed_array_kind<ArrayType>()) {
    throw input_error(env, std::string("spec.") + key + " must be a typed array of the right element type");
  }
  const ArrayType typed = value.As<ArrayType>();
  if (count >= 0 && int64_t(typed.ElementLength()) != count) {
    throw input_error(env, std::string("spec.") + key + " must have " + std::to_string(count) + " elements");
  }
  return std::vector<T>(typed.Data(), typed.Data() + typed.ElementLength());
}

template <typename T>
Napi::Value typed(Napi::Env env, const std::vector<T>& values) {
  if constexpr (std::is_same_v<T, float>) {
    Napi::Float32Array out = Napi::Float32Array::New(env, values.size());
    std::copy(values.begin(), values.end(), out.Data());
    return out;
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    Napi::Uint8Array out = Napi::Uint8Array::New(env, values.size());
    std::copy(values.begin(), values.end(), out.Data());
    return out;
  } else {
    Napi::Int32Array out = Napi::Int32Array::New(env, values.size());
    std::copy(values.begin(), values.end(), out.Data());
    return out;
  }
}

DType dtype_of(Napi::Env env, const Napi::Object& spec) {
  DType dtype;
  if (!parse_dtype(text(env, spec, "dtype"), &dtype) || dtype == DType::Float64) {
    throw input_error(env, "spec.dtype must be 'float32', 'bfloat16', 'float16' or 'int8'");
  }
  return dtype;
}

gpu::Element element_of(Napi::Env env, DType dtype) {
  switch (dtype) {
    case DType::Float32: return gpu::Element::F32;
    case DType::BFloat16: return gpu::Element::BF16;
    case DType::Float16: return gpu::Element::F16;
    default: throw input_error(env, "this kernel takes float32, bfloat16 or float16");
  }
}

// Values rounded to a 16-bit dtype, as bits.
std::vector<uint16_t> half_bits(const std::vector<float>& values, DType dtype) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = dtype == DType::BFloat16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
  return bits;
}

// A CPU weight matrix [rows, cols] of `dtype` holding `values` (rounded to it; int8 values are the
// integers q themselves, with per-row `scales`).
WeightMatrix cpu_matrix(DType dtype, int64_t rows, int64_t cols, const std::vector<float>& values, const std::vector<float>& scales) {
  WeightMatrix matrix = allocate_matrix(dtype, rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) store_from_f32(matrix.data, dtype, matrix.offset(r, c), values[size_t(r * cols + c)]);
    if (dtype == DType::Int8) matrix.scales[size_t(r)] = scales[size_t(r)];
  }
  return matrix;
}

// embedding({ table: Float32Array [vocab·dim] (int8: the integers q), dim, dtype, ids: Int32Array,
//             scales?: Float32Array [vocab] (int8) }) → { gpu, cpu }: embedding (embedding_int8 for int8)
//   against cpu::embedding over a WeightMatrix of dtype.
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t dim = integer(env, spec, "dim", 1, 1 << 16);
  const DType dtype = dtype_of(env, spec);
  const std::vector<float> table = array<Napi::Float32Array>(env, spec, "table", -1);
  const std::vector<int32_t> ids = array<Napi::Int32Array>(env, spec, "ids", -1);
  const int64_t vocab = int64_t(table.size()) / dim;
  if (vocab * dim != int64_t(table.size()) || vocab == 0) throw input_error(env, "spec.table must hold whole rows of dim values");
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) throw input_error(env, "spec.ids must lie in [0, vocab)");
  }
  const std::vector<float> scales = array<Napi::Float32Array>(env, spec, "scales", vocab, dtype != DType::Int8);
  if (dtype == DType::Int8) {
    for (float q : table) {
      if (!(q >= -127.0f && q <= 127.0f) || q != float(int(q))) throw input_error(env, "int8 tables must hold integers in [-127, 127]");
    }
  }
  return call_core(env, [&] {
    const WeightMatrix cpu_table = cpu_matrix(dtype, vocab, dim, table, scales);
    std::vector<float> cpu_out(ids.size() * size_t(dim));
    cpu::embedding(cpu_table, ids.data(), int64_t(ids.size()), cpu_out.data());
    Device device;
    float* out = device.allocate<float>(cpu_out.size());
    if (dtype == DType::Int8) {
      std::vector<int8_t> q(table.size());
      for (size_t i = 0; i < table.size(); ++i) q[i] = int8_t(table[i]);
      gpu::embedding_int8(device.upload(q), device.upload(scales), dim, device.upload(ids), int64_t(ids.size()), out, device.native());
    } else {
      const void* device_table = dtype == DType::Float32 ? static_cast<const void*>(device.upload(table))
                                                         : static_cast<const void*>(device.upload(half_bits(table, dtype)));
      gpu::embedding(device_table, element_of(env, dtype), dim, device.upload(ids), int64_t(ids.size()), out, device.native());
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpu", typed(env, device.download(out, cpu_out.size())));
    result.Set("cpu", typed(env, cpu_out));
    return result;
  });
}

// gatherRows({ x: Float32Array [sourceRows · dim], dim, rows: Int32Array }) → Float32Array [rows · dim]
// through gather_rows (there is no CPU operator to compare with; the test checks each row itself).
Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t dim = integer(env, spec, "dim", 1, 1 << 16);
  const std::vector<float> x = array<Napi::Float32Array>(env, spec, "x", -1);
  const std::vector<int32_t> rows = array<Napi::Int32Array>(env, spec, "rows", -1);
  const int64_t source_rows = int64_t(x.size()) / dim;
  if (source_rows * dim != int64_t(x.size()) || source_rows == 0) throw input_error(env, "spec.x must hold whole rows of dim values");
  for (int32_t row : rows) {
    if (row < 0 || row >= source_rows) throw input_error(env, "spec.rows must lie in [0, rows of x)");
  }
  return call_core(env, [&] {
    Device device;
    float* out = device.allocate<float>(rows.size() * size_t(dim));
    gpu::gather_rows(device.upload(x), dim, device.upload(rows), int64_t(rows.size()), out, device.native());
    return typed(env, device.download(out, rows.size() * size_t(dim)));
  });
}

// addLayerNorm({ residual, add?, rows, dim, gamma, beta, epsilon }) → { gpu, gpuResidual, cpu }: the
// CPU side adds in float32 and runs cpu::layer_norm.
Napi::Value AddLayerNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t rows = integer(env, spec, "rows", 1, 4096), dim = integer(env, spec, "dim", 1, 1 << 16);
  const std::vector<float> residual = array<Napi::Float32Array>(env, spec, "residual", rows * dim);
  const std::vector<float> add = array<Napi::Float32Array>(env, spec, "add", rows * dim, true);
  const std::vector<float> gamma = array<Napi::Float32Array>(env, spec, "gamma", dim);
  const std::vector<float> beta = array<Napi::Float32Array>(env, spec, "beta", dim);
  const float epsilon = float(number(env, spec, "epsilon"));
  return call_core(env, [&] {
    std::vector<float> summed = residual;
    for (size_t i = 0; i < add.size(); ++i) summed[i] = residual[i] + add[i];
    std::vector<int64_t> row_ids(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) row_ids[size_t(r)] = r;
    std::vector<float> cpu_out(summed.size());
    cpu::layer_norm(summed.data(), row_ids.data(), rows, dim, cpu::LayerNormParams{gamma.data(), beta.data(), epsilon}, cpu_out.data());
    Device device;
    float* device_residual = device.upload(residual);
    float* out = device.allocate<float>(summed.size());
    gpu::add_layer_norm(device_residual, add.empty() ? nullptr : device.upload(add), rows, dim, device.upload(gamma), device.upload(beta),
                        epsilon, out, device.native());
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpu", typed(env, device.download(out, summed.size())));
    result.Set("gpuResidual", typed(env, device.download(device_residual, summed.size())));
    result.Set("cpu", typed(env, cpu_out));
    return result;
  });
}

// biasGelu({ x, rows, cols, bias? }) → { gpu, cpu }: the CPU side is the matmul epilogue (bias, GELU)
// after a product with the identity, which is exact.
Napi::Value BiasGelu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t rows = integer(env, spec, "rows", 1, 4096), cols = integer(env, spec, "cols", 1, 512);
  const std::vector<float> x = array<Napi::Float32Array>(env, spec, "x", rows * cols);
  const std::vector<float> bias = array<Napi::Float32Array>(env, spec, "bias", cols, true);
  return call_core(env, [&] {
    std::vector<float> identity(size_t(cols * cols), 0.0f);
    for (int64_t i = 0; i < cols; ++i) identity[size_t(i * cols + i)] = 1.0f;
    const WeightMatrix eye = cpu_matrix(DType::Float32, cols, cols, identity, {});
    cpu::PackedActivations packed;
    cpu::pack_activations(x.data(), rows, cols, DType::Float32, nullptr, packed);
    std::vector<float> cpu_out(x.size());
    cpu::matmul(packed, eye, cpu::Epilogue{bias.empty() ? nullptr : bias.data(), true, false}, cpu_out.data());
    Device device;
    float* device_x = device.upload(x);
    gpu::bias_gelu(device_x, rows, cols, bias.empty() ? nullptr : device.upload(bias), device.native());
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpu", typed(env, device.download(device_x, x.size())));
    result.Set("cpu", typed(env, cpu_out));
    return result;
  });
}

// rotary({ headDim, heads, ropeTheta, ropeScaling: 'none' | 'linear' | 'dynamic', factor, maxPositions,
//          sequenceLength, positions: Int32Array [rows], x: Float32Array [rows · heads · headDim] })
//   → { gpuCos, gpuSin, cpuCos, cpuSin, gpuX, cpuX }
Napi::Value Rotary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  ModelConfig config;
  const int64_t head_dim = integer(env, spec, "headDim", 2, 512);
  const int64_t heads = integer(env, spec, "heads", 1, 64);
  if (head_dim % 2 != 0) throw input_error(env, "spec.headDim must be even");
  config.num_heads = heads;
  config.num_kv_heads = heads;
  config.hidden_dim = heads * head_dim;
  config.position_encoding = PositionEncoding::Rotary;
  config.rope_theta = number(env, spec, "ropeTheta");
  const std::string scaling = text(env, spec, "ropeScaling");
  config.rope_scaling = scaling == "linear" ? RopeScaling::Linear : scaling == "dynamic" ? RopeScaling::Dynamic : RopeScaling::None;
  config.rope_scaling_factor = number(env, spec, "factor");
  config.max_position_embeddings = integer(env, spec, "maxPositions", 1, 1 << 20);
  const int64_t sequence_length = integer(env, spec, "sequenceLength", 1, 1 << 20);
  const std::vector<int32_t> positions = array<Napi::Int32Array>(env, spec, "positions", -1);
  const int64_t rows = int64_t(positions.size());
  const std::vector<float> x = array<Napi::Float32Array>(env, spec, "x", rows * heads * head_dim);
  return call_core(env, [&] {
    const int64_t half = head_dim / 2;
    std::vector<float> cpu_cos(size_t(rows * half)), cpu_sin(size_t(rows * half)), cpu_x = x;
    cpu::rotary_tables(config, positions.data(), rows, sequence_length, cpu_cos.data(), cpu_sin.data());
    for (int64_t r = 0; r < rows; ++r) {
      cpu::apply_rotary(cpu_x.data() + r * heads * head_dim, heads, head_dim, cpu_cos.data() + r * half, cpu_sin.data() + r * half);
    }
    const falcon::cuda::RotaryScaling folded = falcon::cuda::rotary_scaling(config, sequence_length);
    Device device;
    float* cos_table = device.allocate<float>(cpu_cos.size());
    float* sin_table = device.allocate<float>(cpu_sin.size());
    gpu::rotary_tables(device.upload(positions), device.upload(std::vector<double>(size_t(rows), folded.base)),
                       device.upload(std::vector<double>(size_t(rows), folded.position_scale)), rows, head_dim, cos_table, sin_table,
                       device.native());
    float* device_x = device.upload(x);
    gpu::apply_rotary(device_x, rows, heads * head_dim, 0, heads, head_dim, cos_table, sin_table, device.native());
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpuCos", typed(env, device.download(cos_table, cpu_cos.size())));
    result.Set("gpuSin", typed(env, device.download(sin_table, cpu_sin.size())));
    result.Set("gpuX", typed(env, device.download(device_x, x.size())));
    result.Set("cpuCos", typed(env, cpu_cos));
    result.Set("cpuSin", typed(env, cpu_sin));
    result.Set("cpuX", typed(env, cpu_x));
    return result;
  });
}

// matmul({ x [m·k], m, k, w [n·k] (int8: the integers q), n, dtype, kernel: 'tiled' | 'wmma' | 'gemv',
//          bias?, gelu, accumulate, y0? [m·n], scales? [n] (int8) })
//   → { gpu, cpu, weights }: y through the GPU kernel and the CPU, and the weights as stored (rounded
//     to dtype; int8 as q), for the error bounds. The CPU side is cpu::matmul over a WeightMatrix of
//     dtype, except for int8 through the tiled kernel: that kernel keeps x float32 where cpu::matmul
//     quantises it, so its reference is cpu::matmul in float32 over the dequantised weights q · scale.
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t m = integer(env, spec, "m", 1, 1024), k = integer(env, spec, "k", 1, 8192), n = integer(env, spec, "n", 1, 8192);
  const DType dtype = dtype_of(env, spec);
  const std::string kernel = text(env, spec, "kernel");
  const std::vector<float> x = array<Napi::Float32Array>(env, spec, "x", m * k);
  const std::vector<float> w = array<Napi::Float32Array>(env, spec, "w", n * k);
  const std::vector<float> bias = array<Napi::Float32Array>(env, spec, "bias", n, true);
  std::vector<float> y0 = array<Napi::Float32Array>(env, spec, "y0", m * n, true);
  const std::vector<float> scales = array<Napi::Float32Array>(env, spec, "scales", n, dtype != DType::Int8);
  const bool gelu = flag(spec, "gelu"), accumulate = flag(spec, "accumulate");
  if (y0.empty()) y0.assign(size_t(m * n), 0.0f);
  const bool valid_kernel = kernel == "tiled" || (kernel == "wmma" && (dtype == DType::BFloat16 || dtype == DType::Float16)) ||
                            (kernel == "gemv" && m <= gpu::kGemvMaxRows);
  if (!valid_kernel) throw input_error(env, "spec.kernel does not fit the dtype and row count");
  if (dtype == DType::Int8) {
    for (float q : w) {
      if (!(q >= -127.0f && q <= 127.0f) || q != float(int(q))) throw input_error(env, "int8 weights must be integers in [-127, 127]");
    }
  }
  const bool dequantised_reference = dtype == DType::Int8 && kernel == "tiled";
  return call_core(env, [&] {
    std::vector<float> dequantised;
    if (dequantised_reference) {
      dequantised.resize(w.size());
      for (size_t i = 0; i < w.size(); ++i) dequantised[i] = w[i] * scales[i / size_t(k)];
    }
    const DType cpu_dtype = dequantised_reference ? DType::Float32 : dtype;
    const WeightMatrix matrix = cpu_matrix(cpu_dtype, n, k, dequantised_reference ? dequantised : w, scales);
    cpu::PackedActivations packed;
    cpu::pack_activations(x.data(), m, k, cpu_dtype, nullptr, packed);
    std::vector<float> cpu_out = y0;
    const cpu::Epilogue cpu_epilogue{bias.empty() ? nullptr : bias.data(), gelu, accumulate};
    cpu::matmul(packed, matrix, cpu_epilogue, cpu_out.data());
    std::vector<float> stored(w.size());
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < k; ++c) {
        stored[size_t(r * k + c)] = dtype == DType::Int8 ? w[size_t(r * k + c)] : matrix.get(r, c);
      }
    }

    Device device;
    gpu::GemmEpilogue epilogue;
    epilogue.bias = bias.empty() ? nullptr : device.upload(bias);
    epilogue.gelu = gelu;
    epilogue.accumulate = accumulate;
    const float* device_x = device.upload(x);
    float* y = device.upload(y0);
    if (dtype == DType::Int8) {
      std::vector<int8_t> q(w.size());
      for (size_t i = 0; i < w.size(); ++i) q[i] = int8_t(w[i]);
      const int8_t* device_q = device.upload(q);
      if (kernel == "tiled") {
        gpu::gemm_f32(device_x, m, k, device_q, gpu::Element::I8, device.upload(scales), n, epilogue, y, device.native());
      } else {
        gpu::gemv_int8(device_x, m, k, device_q, device.upload(scales), n, epilogue, y, device.native());
      }
    } else if (kernel == "wmma") {
      // As the backend's linear: x rounded (bfloat16) or split (float16), then the GEMM.
      const gpu::Element type = element_of(env, dtype);
      void* staging = device.allocate<unsigned char>(gpu::wmma_input_bytes(type, m, k));
      const gpu::WmmaInput input = gpu::stage_wmma_input(device_x, m, k, type, staging, device.native());
      gpu::gemm_wmma(input, type, m, k, device.upload(half_bits(w, dtype)), n, epilogue, y, device.native());
    } else {
      const void* weights = dtype == DType::Float32 ? static_cast<const void*>(device.upload(w))
                                                    : static_cast<const void*>(device.upload(half_bits(w, dtype)));
      if (kernel == "tiled") {
        gpu::gemm_f32(device_x, m, k, weights, element_of(env, dtype), nullptr, n, epilogue, y, device.native());
      } else {
        gpu::gemv(device_x, m, k, weights, element_of(env, dtype), n, epilogue, y, device.native());
      }
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpu", typed(env, device.download(y, y0.size())));
    result.Set("cpu", typed(env, cpu_out));
    result.Set("weights", typed(env, stored));
    return result;
  });
}

// splitF16({ x: Float32Array [rows·k], rows, k }) → { high, low, rowUnscale, hostHigh }: split_f16's
// float16 parts (widened to float32, exactly) and row scales, and the host's float16 rounding
// (falcon::f32_to_f16) of each x scaled by its row's 1 / rowUnscale, which high must equal.
Napi::Value SplitF16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t rows = integer(env, spec, "rows", 1, 1024), k = integer(env, spec, "k", 1, 65536);
  const std::vector<float> x = array<Napi::Float32Array>(env, spec, "x", rows * k);
  return call_core(env, [&] {
    Device device;
    uint16_t* high = device.allocate<uint16_t>(x.size());
    uint16_t* low = device.allocate<uint16_t>(x.size());
    float* row_unscale = device.allocate<float>(size_t(rows));
    gpu::split_f16(device.upload(x), rows, k, high, low, row_unscale, device.native());
    const std::vector<uint16_t> high_bits = device.download(high, x.size()), low_bits = device.download(low, x.size());
    const std::vector<float> unscale = device.download(row_unscale, size_t(rows));
    std::vector<float> high_values(x.size()), low_values(x.size()), host_high(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      high_values[i] = f16_to_f32(high_bits[i]);
      low_values[i] = f16_to_f32(low_bits[i]);
      host_high[i] = f16_to_f32(f32_to_f16(x[i] * (1.0f / unscale[i / size_t(k)])));
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("high", typed(env, high_values));
    result.Set("low", typed(env, low_values));
    result.Set("rowUnscale", typed(env, unscale));
    result.Set("hostHigh", typed(env, host_high));
    return result;
  });
}

// Where a one-layer KvPool's values and (KV head, block) elements lie relative to its first key
// element, in elements of its dtype (kernels.h's PagedKv layout); strides that no index uses are 0.
struct PoolLayout {
  size_t values_offset_bytes;
  int64_t head_stride;
  int64_t block_stride;
};

PoolLayout pool_layout(const KvPool& pool) {
  const auto* start = static_cast<const unsigned char*>(pool.keys(0, 0, 0));
  const size_t element = dtype_size(pool.dtype());
  const auto elements_from_start = [&](const void* p) { return int64_t(size_t(static_cast<const unsigned char*>(p) - start) / element); };
  return PoolLayout{size_t(static_cast<const unsigned char*>(pool.values(0, 0, 0)) - start),
                    pool.num_kv_heads() > 1 ? elements_from_start(pool.keys(0, 0, 1)) : 0,
                    pool.num_blocks() > 1 ? elements_from_start(pool.keys(1, 0, 0)) : 0};
}

// The one-layer pool an attention or KV-write spec names: { heads, kvHeads, headDim, kvDtype, numBlocks }.
struct PoolSpec {
  ModelConfig config;
  int64_t head_dim;
  DType kv_dtype;
  int64_t num_blocks;
};

PoolSpec read_pool_spec(Napi::Env env, const Napi::Object& spec, int64_t max_head_dim) {
  PoolSpec pool;
  pool.config.num_layers = 1;
  pool.config.num_heads = integer(env, spec, "heads", 1, 64);
  pool.config.num_kv_heads = integer(env, spec, "kvHeads", 1, 64);
  pool.head_dim = integer(env, spec, "headDim", 1, max_head_dim);
  if (pool.config.num_heads % pool.config.num_kv_heads != 0) throw input_error(env, "spec.heads must be a multiple of spec.kvHeads");
  pool.config.hidden_dim = pool.config.num_heads * pool.head_dim;
  pool.kv_dtype = kv_dtype_value(env, spec.Get("kvDtype"));
  pool.num_blocks = integer(env, spec, "numBlocks", 1, 4096);
  return pool;
}

// kernelRefusals() → [{ call, code, message }]: launchers called with sizes or types they must refuse
// (kernels.h), each with the error code it threw ("none" when it did not), so a check that goes
// missing fails a test. Pointers are real buffers large enough for the shapes' valid parts, or null
// where the refusal is about that pointer.
Napi::Value KernelRefusals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return call_core(env, [&] {
    Device device;
    float* floats = device.allocate<float>(256);
    const int8_t* bytes = device.upload(std::vector<int8_t>(256, 0));
    const uint16_t* halves = device.upload(std::vector<uint16_t>(256, 0));
    uint16_t* halves_out = device.allocate<uint16_t>(256);
    const int32_t* ints = device.upload(std::vector<int32_t>(64, 0));
    int32_t* ints_out = device.allocate<int32_t>(64);
    const double* doubles = device.upload(std::vector<double>(64, 0.5));
    const gpu::GemmEpilogue none;
    const cudaStream_t stream = device.native();
    gpu::PagedKv int8_pool;
    int8_pool.type = gpu::Element::I8;
    int8_pool.keys = int8_pool.values = bytes;
    const uint8_t* bytes_u8 = device.upload(std::vector<uint8_t>(64, 0));
    gpu::PagedKvWrite f32_pool;
    f32_pool.keys = f32_pool.values = floats;
    gpu::PagedKvWrite int8_write_pool = f32_pool;
    int8_write_pool.type = gpu::Element::I8;
    gpu::AttentionRows rows;
    rows.row_sequence = rows.row_slot = rows.block_tables = ints;
    rows.max_blocks = 1;
    const std::vector<std::pair<const char*, std::function<void()>>> calls = {
        {"gemm_f32 k = 0", [&] { gpu::gemm_f32(floats, 1, 0, floats, gpu::Element::F32, nullptr, 1, none, floats, stream); }},
        {"gemm_f32 n = 0", [&] { gpu::gemm_f32(floats, 1, 4, floats, gpu::Element::F32, nullptr, 0, none, floats, stream); }},
        {"gemm_f32 m < 0", [&] { gpu::gemm_f32(floats, -1, 4, floats, gpu::Element::F32, nullptr, 4, none, floats, stream); }},
        {"gemm_f32 rows past one launch",
         [&] { gpu::gemm_f32(floats, int64_t(65536) * 64, 4, floats, gpu::Element::F32, nullptr, 4, none, floats, stream); }},
        {"gemm_f32 int8 without scales", [&] { gpu::gemm_f32(floats, 1, 4, bytes, gpu::Element::I8, nullptr, 4, none, floats, stream); }},
        {"gemm_f32 float32 with scales", [&] { gpu::gemm_f32(floats, 1, 4, floats, gpu::Element::F32, floats, 4, none, floats, stream); }},
        {"gemm_wmma float32", [&] { gpu::gemm_wmma(gpu::WmmaInput{}, gpu::Element::F32, 1, 16, nullptr, 1, none, floats, stream); }},
        {"gemm_wmma int8", [&] { gpu::gemm_wmma(gpu::WmmaInput{}, gpu::Element::I8, 1, 16, nullptr, 1, none, floats, stream); }},
        {"gemm_wmma k = 0", [&] { gpu::gemm_wmma(gpu::WmmaInput{}, gpu::Element::BF16, 1, 0, nullptr, 1, none, floats, stream); }},
        {"gemm_wmma float16 without the low half",
         [&] { gpu::gemm_wmma(gpu::WmmaInput{halves, nullptr, floats}, gpu::Element::F16, 1, 16, halves, 1, none, floats, stream); }},
        {"gemm_wmma float16 without row scales",
         [&] { gpu::gemm_wmma(gpu::WmmaInput{halves, halves, nullptr}, gpu::Element::F16, 1, 16, halves, 1, none, floats, stream); }},
        {"gemm_wmma bfloat16 with a low half",
         [&] { gpu::gemm_wmma(gpu::WmmaInput{halves, halves, floats}, gpu::Element::BF16, 1, 16, halves, 1, none, floats, stream); }},
        {"stage_wmma_input float32", [&] { gpu::stage_wmma_input(floats, 1, 4, gpu::Element::F32, floats, stream); }},
        {"split_f16 k = 0", [&] { gpu::split_f16(floats, 1, 0, halves_out, halves_out, floats, stream); }},
        {"split_f16 rows < 0", [&] { gpu::split_f16(floats, -1, 4, halves_out, halves_out, floats, stream); }},
        {"gemv m > kGemvMaxRows", [&] { gpu::gemv(floats, gpu::kGemvMaxRows + 1, 4, floats, gpu::Element::F32, 4, none, floats, stream); }},
        {"gemv int8", [&] { gpu::gemv(floats, 1, 4, bytes, gpu::Element::I8, 4, none, floats, stream); }},
        {"gemv n = 0", [&] { gpu::gemv(floats, 1, 4, floats, gpu::Element::F32, 0, none, floats, stream); }},
        {"gemv_int8 without scales", [&] { gpu::gemv_int8(floats, 1, 4, bytes, nullptr, 4, none, floats, stream); }},
        {"gemv_int8 m > kGemvMaxRows", [&] { gpu::gemv_int8(floats, gpu::kGemvMaxRows + 1, 4, bytes, floats, 4, none, floats, stream); }},
        {"embedding int8", [&] { gpu::embedding(bytes, gpu::Element::I8, 4, ints, 1, floats, stream); }},
        {"embedding_int8 without scales", [&] { gpu::embedding_int8(bytes, nullptr, 4, ints, 1, floats, stream); }},
        {"embedding_int8 dim = 0", [&] { gpu::embedding_int8(bytes, floats, 0, ints, 1, floats, stream); }},
        {"gather_rows dim = 0", [&] { gpu::gather_rows(floats, 0, ints, 1, floats, stream); }},
        {"gather_rows count < 0", [&] { gpu::gather_rows(floats, 4, ints, -1, floats, stream); }},
        {"round_to float32", [&] { gpu::round_to(floats, 4, gpu::Element::F32, nullptr, stream); }},
        {"round_to int8", [&] { gpu::round_to(floats, 4, gpu::Element::I8, nullptr, stream); }},
        {"paged_attention int8 pool", [&] { gpu::paged_attention(floats, 1, 4, 1, 1, 4, nullptr, int8_pool, rows, 1, floats, floats, stream); }},
        {"write_kv qkv rows too narrow", [&] { gpu::write_kv(floats, 1, 11, 1, 1, 4, ints, ints, bytes_u8, ints, f32_pool, stream); }},
        {"write_kv heads not a multiple of kv_heads", [&] { gpu::write_kv(floats, 1, 64, 3, 2, 4, ints, ints, bytes_u8, ints, f32_pool, stream); }},
        {"write_kv int8 pool", [&] { gpu::write_kv(floats, 1, 12, 1, 1, 4, ints, ints, bytes_u8, ints, int8_write_pool, stream); }},
        {"write_kv rows < 0", [&] { gpu::write_kv(floats, -1, 12, 1, 1, 4, ints, ints, bytes_u8, ints, f32_pool, stream); }},
        {"top_k max_k > kTopKMax", [&] { gpu::top_k(floats, 4, ints, ints, ints, 1, gpu::kTopKMax + 1, ints_out, floats, stream); }},
        {"top_k max_k = 0", [&] { gpu::top_k(floats, 4, ints, ints, ints, 1, 0, ints_out, floats, stream); }},
        {"top_k vocab = 0", [&] { gpu::top_k(floats, 0, ints, ints, ints, 1, 1, ints_out, floats, stream); }},
        {"top_k count < 0", [&] { gpu::top_k(floats, 4, ints, ints, ints, -1, 1, ints_out, floats, stream); }},
        {"draw_tokens vocab = 0", [&] { gpu::draw_tokens(floats, 0, ints, ints, doubles, doubles, doubles, 1, ints_out, stream); }},
        {"draw_tokens count < 0", [&] { gpu::draw_tokens(floats, 4, ints, ints, doubles, doubles, doubles, -1, ints_out, stream); }},
    };
    Napi::Array result = Napi::Array::New(env, calls.size());
    for (size_t i = 0; i < calls.size(); ++i) {
      std::string code = "none", message;
      try {
        calls[i].second();
        device.runtime().synchronize(device.stream());
      } catch (const Error& error) {
        code = error_code(error.kind());
        message = error.what();
      }
      Napi::Object entry = Napi::Object::New(env);
      entry.Set("call", calls[i].first);
      entry.Set("code", code);
      entry.Set("message", message);
      result.Set(uint32_t(i), entry);
    }
    return result;
  });
}

// The rows of vocab values `logits` holds; throws an input error unless it holds one or more whole rows.
int64_t logits_rows(Napi::Env env, const std::vector<float>& logits, int64_t vocab) {
  const int64_t rows = int64_t(logits.size()) / vocab;
  if (rows * vocab != int64_t(logits.size()) || rows == 0) throw input_error(env, "spec.logits must hold whole rows of vocab values");
  return rows;
}

// A kernel's table of logits rows: spec.logits (whole rows of spec.vocab values), and per row it takes,
// spec.rows (which row) and spec.allowed (its ids [0, allowed), allowed in [1, min(vocab, most_allowed)]).
struct LogitsRowTable {
  int64_t vocab = 0;
  std::vector<float> logits;
  std::vector<int32_t> rows, allowed;
};

LogitsRowTable read_logits_row_table(Napi::Env env, const Napi::Object& spec, int64_t most_allowed) {
  LogitsRowTable table;
  table.vocab = integer(env, spec, "vocab", 1, 1 << 20);
  table.logits = array<Napi::Float32Array>(env, spec, "logits", -1);
  table.rows = array<Napi::Int32Array>(env, spec, "rows", -1);
  table.allowed = array<Napi::Int32Array>(env, spec, "allowed", int64_t(table.rows.size()));
  const int64_t rows_of_logits = logits_rows(env, table.logits, table.vocab);
  for (size_t i = 0; i < table.rows.size(); ++i) {
    if (table.rows[i] < 0 || table.rows[i] >= rows_of_logits) throw input_error(env, "spec.rows must lie in [0, rows of logits)");
    if (table.allowed[i] < 1 || table.allowed[i] > std::min(table.vocab, most_allowed)) throw input_error(env, "spec.allowed must lie in [1, vocab]");
  }
  return table;
}

// topK({ logits: Float32Array [logitsRows · vocab], vocab, rows, counts, allowed: Int32Array [ranked rows] })
//   → { gpuIds, gpuValues, cpuIds, cpuValues }: each ranked row's counts[i] candidates, rows one after
//     another, from top_k and from the sampler's own ranking (core/sampler.h rank_top_k).
Napi::Value TopK(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const LogitsRowTable table = read_logits_row_table(env, spec, int64_t(1) << 20);
  const int64_t vocab = table.vocab;
  const std::vector<float>& logits = table.logits;
  const std::vector<int32_t>& rows = table.rows;
  const std::vector<int32_t>& allowed = table.allowed;
  const std::vector<int32_t> counts = array<Napi::Int32Array>(env, spec, "counts", int64_t(rows.size()));
  for (size_t i = 0; i < rows.size(); ++i) {
    if (counts[i] < 1 || counts[i] > std::min<int64_t>(allowed[i], gpu::kTopKMax)) {
      throw input_error(env, "spec.counts must lie in [1, min(allowed, kTopKMax)]");
    }
  }
  return call_core(env, [&] {
    std::vector<int32_t> cpu_ids, gpu_ids;
    std::vector<float> cpu_values, gpu_values;
    TrackedVector<int32_t> order;
    for (size_t i = 0; i < rows.size(); ++i) {
      const float* row = logits.data() + int64_t(rows[i]) * vocab;
      std::vector<int32_t> best(static_cast<size_t>(counts[i]));
      rank_top_k(row, allowed[i], counts[i], best.data(), &order);
      for (int32_t id : best) {
        cpu_ids.push_back(id);
        cpu_values.push_back(row[id]);
      }
    }
    Device device;
    const size_t slots = std::max<size_t>(rows.size(), 1) * size_t(gpu::kTopKMax);
    int32_t* ids = device.allocate<int32_t>(slots);
    float* values = device.allocate<float>(slots);
    gpu::top_k(device.upload(logits), vocab, device.upload(rows), device.upload(counts), device.upload(allowed), int64_t(rows.size()),
               gpu::kTopKMax, ids, values, device.native());
    const std::vector<int32_t> all_ids = device.download(ids, slots);
    const std::vector<float> all_values = device.download(values, slots);
    for (size_t i = 0; i < rows.size(); ++i) {
      const size_t first = i * size_t(gpu::kTopKMax);
      gpu_ids.insert(gpu_ids.end(), all_ids.begin() + ptrdiff_t(first), all_ids.begin() + ptrdiff_t(first + size_t(counts[i])));
      gpu_values.insert(gpu_values.end(), all_values.begin() + ptrdiff_t(first), all_values.begin() + ptrdiff_t(first + size_t(counts[i])));
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpuIds", typed(env, gpu_ids));
    result.Set("gpuValues", typed(env, gpu_values));
    result.Set("cpuIds", typed(env, cpu_ids));
    result.Set("cpuValues", typed(env, cpu_values));
    return result;
  });
}

// drawTokens({ logits: Float32Array [logitsRows · vocab], vocab, rows, allowed: Int32Array [drawn rows],
//              temperatures, topPs?, draws: Float64Array [drawn rows] })
//   → { gpu, cpu: Int32Array [drawn rows] }: each drawn row's token from draw_tokens (-1: a nucleus
//     the kernel leaves to the host), and from the host sampler's sample_drawn with the same draw: a
//     temperature sampler at the row's temperature, or where topPs[i] > 0 an uncapped top-p sampler
//     of that mass (topPs absent: all 0).
Napi::Value DrawTokens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const LogitsRowTable table = read_logits_row_table(env, spec, gpu::kDrawMaxIds);
  const int64_t vocab = table.vocab;
  const std::vector<float>& logits = table.logits;
  const std::vector<int32_t>& rows = table.rows;
  const std::vector<int32_t>& allowed = table.allowed;
  const std::vector<double> temperatures = array<Napi::Float64Array>(env, spec, "temperatures", int64_t(rows.size()));
  std::vector<double> top_ps = array<Napi::Float64Array>(env, spec, "topPs", int64_t(rows.size()), true);
  if (top_ps.empty()) top_ps.assign(rows.size(), 0.0);
  const std::vector<double> draws = array<Napi::Float64Array>(env, spec, "draws", int64_t(rows.size()));
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!(temperatures[i] > 0 && std::isfinite(temperatures[i]))) throw input_error(env, "spec.temperatures must be finite and above 0");
    if (!(top_ps[i] == 0 || (top_ps[i] > 0 && top_ps[i] < 1))) throw input_error(env, "spec.topPs must be 0 or lie in (0, 1)");
    if (!(draws[i] >= 0 && draws[i] < 1)) throw input_error(env, "spec.draws must lie in [0, 1)");
  }
  return call_core(env, [&] {
    std::vector<int32_t> cpu(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      SamplerParams params;
      params.kind = top_ps[i] > 0 ? SamplerKind::TopP : SamplerKind::Temperature;
      params.p = top_ps[i] > 0 ? top_ps[i] : 1.0;
      params.temperature = temperatures[i];
      SequenceSampler sampler(params);
      cpu[i] = sampler.sample_drawn(draws[i], logits.data() + int64_t(rows[i]) * vocab, allowed[i]);
    }
    Device device;
    int32_t* tokens = device.allocate<int32_t>(std::max<size_t>(rows.size(), 1));
    gpu::draw_tokens(device.upload(logits), vocab, device.upload(rows), device.upload(allowed), device.upload(temperatures),
                     device.upload(top_ps), device.upload(draws), int64_t(rows.size()), tokens, device.native());
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpu", typed(env, device.download(tokens, rows.size())));
    result.Set("cpu", typed(env, cpu));
    return result;
  });
}

// sampleRanked({ logits: Float32Array [rows · vocab], vocab, allowed, sampler: a resolved sampler config, stream })
//   → { whole, ranked: Int32Array [rows], candidates: Int32Array [rows] }: the tokens one SequenceSampler
//     samples from the whole rows, and those a second one (same config and stream) samples from the
//     candidates top_k ranks on the device (the engine's CUDA path), with the count each row needed
//     (0: the sampler needs the whole row, and the second sampler samples it whole too).
Napi::Value SampleRanked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t vocab = integer(env, spec, "vocab", 1, 1 << 20);
  const int64_t allowed = integer(env, spec, "allowed", 1, vocab);
  const uint32_t stream = uint32_t(integer(env, spec, "stream", 0, 1 << 20));
  const std::vector<float> logits = array<Napi::Float32Array>(env, spec, "logits", -1);
  const int64_t rows = logits_rows(env, logits, vocab);
  const SamplerParams params = read_sampler_params(env, spec.Get("sampler"));
  return call_core(env, [&] {
    SequenceSampler whole_sampler(params, stream), ranked_sampler(params, stream);
    const int64_t needed = ranked_sampler.candidates_needed(allowed);
    const int64_t candidates = needed <= gpu::kTopKMax ? needed : 0;
    const size_t row_count = static_cast<size_t>(rows);
    std::vector<int32_t> whole(row_count), ranked(row_count), counts(row_count, int32_t(candidates));
    std::vector<int32_t> ids, row_ids(row_count);
    std::vector<float> values;
    if (candidates > 0) {
      for (int64_t r = 0; r < rows; ++r) row_ids[size_t(r)] = int32_t(r);
      Device device;
      const size_t slots = size_t(rows * gpu::kTopKMax);
      int32_t* device_ids = device.allocate<int32_t>(slots);
      float* device_values = device.allocate<float>(slots);
      gpu::top_k(device.upload(logits), vocab, device.upload(row_ids), device.upload(counts),
                 device.upload(std::vector<int32_t>(row_count, int32_t(allowed))), rows, gpu::kTopKMax, device_ids, device_values,
                 device.native());
      ids = device.download(device_ids, slots);
      values = device.download(device_values, slots);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = logits.data() + r * vocab;
      whole[size_t(r)] = whole_sampler.sample(row, allowed);
      const size_t first = size_t(r * gpu::kTopKMax);
      ranked[size_t(r)] = candidates > 0 ? ranked_sampler.sample_candidates(ids.data() + first, values.data() + first, candidates, allowed)
                                         : ranked_sampler.sample(row, allowed);
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("whole", typed(env, whole));
    result.Set("ranked", typed(env, ranked));
    result.Set("candidates", typed(env, counts));
    return result;
  });
}

// attention({ heads, kvHeads, headDim, kvDtype, numBlocks, keys, values: Float32Array [kvHeads · numBlocks
//             · 16 · headDim] (slot-major: [kv head][block][slot][c]), valid: Uint8Array, positions:
//             Int32Array [numBlocks · 16], sequences: [{ blockTable: Int32Array, start, count }],
//             q: Float32Array [rows · heads · headDim] (rows: the sequences' new tokens in order),
//             slopes?: Float32Array [heads], kernel: 'split' | 'flash' })
//   → { gpu, cpu, keys, values }: [rows, heads · headDim] from the kernel (split-K paged attention, or
//     the flash prefill over tiles of up to 16 tokens of one sequence) over the pool's
//     blocks uploaded as they are, and from cpu::attention over the same pool; and the keys and values
//     as the pool stores them (rounded to kvDtype), for the error bounds.
Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const PoolSpec pool_spec = read_pool_spec(env, spec, gpu::kAttentionMaxHeadDim);
  const ModelConfig& config = pool_spec.config;
  const int64_t d = pool_spec.head_dim, num_blocks = pool_spec.num_blocks;
  const int64_t H = config.num_heads, Hkv = config.num_kv_heads;
  const DType kv_dtype = pool_spec.kv_dtype;
  const int64_t slots = num_blocks * kKvBlockTokens;
  const std::vector<float> keys = array<Napi::Float32Array>(env, spec, "keys", Hkv * slots * d);
  const std::vector<float> values = array<Napi::Float32Array>(env, spec, "values", Hkv * slots * d);
  const std::vector<uint8_t> valid = array<Napi::Uint8Array>(env, spec, "valid", slots);
  const std::vector<int32_t> positions = array<Napi::Int32Array>(env, spec, "positions", slots);
  const std::vector<float> slopes = array<Napi::Float32Array>(env, spec, "slopes", H, true);
  const std::string kernel = text(env, spec, "kernel");
  if (kernel != "split" && kernel != "flash") throw input_error(env, "spec.kernel must be 'split' or 'flash'");
  if (kernel == "flash" && d > gpu::kFlashMaxHeadDim) throw input_error(env, "the flash kernel takes head sizes up to 128");
  if (!spec.Get("sequences").IsArray()) throw input_error(env, "spec.sequences must be an array");
  const Napi::Array sequence_specs = spec.Get("sequences").As<Napi::Array>();
  struct Sequence {
    std::vector<int32_t> table;
    int64_t start, count;
  };
  std::vector<Sequence> sequences;
  int64_t rows = 0, max_blocks = 1, max_visible = 1;
  for (uint32_t i = 0; i < sequence_specs.Length(); ++i) {
    if (!sequence_specs.Get(i).IsObject()) throw input_error(env, "spec.sequences entries must be objects");
    const Napi::Object entry = sequence_specs.Get(i).As<Napi::Object>();
    Sequence sequence{array<Napi::Int32Array>(env, entry, "blockTable", -1), integer(env, entry, "start", 0, 1 << 20),
                      integer(env, entry, "count", 1, 1 << 20)};
    if (int64_t(sequence.table.size()) * kKvBlockTokens < sequence.start + sequence.count) throw input_error(env, "a block table is too short");
    for (int32_t block : sequence.table) {
      if (block < 0 || block >= num_blocks) throw input_error(env, "block ids must lie in [0, numBlocks)");
    }
    rows += sequence.count;
    max_blocks = std::max(max_blocks, int64_t(sequence.table.size()));
    max_visible = std::max(max_visible, sequence.start + sequence.count);
    sequences.push_back(std::move(sequence));
  }
  const std::vector<float> q = array<Napi::Float32Array>(env, spec, "q", rows * H * d);
  return call_core(env, [&] {
    KvPool pool(config, num_blocks, kv_dtype);
    for (int64_t h = 0; h < Hkv; ++h) {
      for (int64_t b = 0; b < num_blocks; ++b) {
        for (int64_t slot = 0; slot < kKvBlockTokens; ++slot) {
          for (int64_t c = 0; c < d; ++c) {
            const size_t from = size_t(((h * num_blocks + b) * kKvBlockTokens + slot) * d + c);
            store_from_f32(pool.keys(b, 0, h), kv_dtype, size_t(c * kKvBlockTokens + slot), keys[from]);
            store_from_f32(pool.values(b, 0, h), kv_dtype, size_t(slot * d + c), values[from]);
          }
        }
      }
    }
    std::copy(valid.begin(), valid.end(), pool.valid(0));
    std::copy(positions.begin(), positions.end(), pool.positions(0));
    std::vector<float> stored_keys(keys.size()), stored_values(values.size());
    for (int64_t h = 0; h < Hkv; ++h) {
      for (int64_t b = 0; b < num_blocks; ++b) {
        for (int64_t slot = 0; slot < kKvBlockTokens; ++slot) {
          for (int64_t c = 0; c < d; ++c) {
            const size_t at = size_t(((h * num_blocks + b) * kKvBlockTokens + slot) * d + c);
            stored_keys[at] = load_as_f32(pool.keys(b, 0, h), kv_dtype, size_t(c * kKvBlockTokens + slot));
            stored_values[at] = load_as_f32(pool.values(b, 0, h), kv_dtype, size_t(slot * d + c));
          }
        }
      }
    }

    // The CPU: a step plan over the same blocks, every new token an output row.
    cpu::StepPlan plan;
    std::vector<std::vector<uint8_t>> gathered_valid(sequences.size());
    std::vector<std::vector<int32_t>> gathered_positions(sequences.size());
    std::vector<int32_t> row_sequence, row_slot;
    for (size_t s = 0; s < sequences.size(); ++s) {
      const Sequence& sequence = sequences[s];
      for (int64_t j = 0; j < sequence.start + sequence.count; ++j) {
        const int32_t block = sequence.table[size_t(j / kKvBlockTokens)];
        gathered_valid[s].push_back(pool.valid(block)[j % kKvBlockTokens]);
        gathered_positions[s].push_back(pool.positions(block)[j % kKvBlockTokens]);
      }
      cpu::PagedSequence paged;
      paged.block_table = sequence.table.data();
      paged.start = sequence.start;
      paged.count = sequence.count;
      paged.first_row = int64_t(row_sequence.size());
      paged.valid = gathered_valid[s].data();
      paged.positions = gathered_positions[s].data();
      plan.sequences.push_back(paged);
      for (int64_t t = 0; t < sequence.count; ++t) {
        row_sequence.push_back(int32_t(s));
        row_slot.push_back(int32_t(sequence.start + t));
        plan.row_is_output.push_back(1);
      }
    }
    cpu::plan_attention(config, plan);
    std::vector<float> cpu_out(size_t(rows * H * d), 0.0f);
    const std::vector<float> cpu_slopes(slopes.begin(), slopes.end());
    cpu::attention(config, 0, pool, plan, plan.attention_items, q.data(), H * d, cpu_slopes, cpu_out.data());

    // The kernel, over the pool's key and value bytes uploaded as they are.
    Device device;
    unsigned char* device_pool = device.allocate<unsigned char>(pool.byte_size());
    device.runtime().copy(device_pool, pool.keys(0, 0, 0), pool.byte_size(), CopyKind::HostToDevice, device.stream());
    const PoolLayout pool_at = pool_layout(pool);
    gpu::PagedKv kv;
    kv.type = element_of(env, kv_dtype);
    kv.keys = device_pool;
    kv.values = device_pool + pool_at.values_offset_bytes;
    kv.block_stride = pool_at.block_stride;
    kv.head_stride = pool_at.head_stride;
    kv.valid = device.upload(valid);
    kv.positions = device.upload(positions);
    std::vector<int32_t> tables(sequences.size() * size_t(max_blocks), 0);
    for (size_t s = 0; s < sequences.size(); ++s) std::copy(sequences[s].table.begin(), sequences[s].table.end(), tables.begin() + s * size_t(max_blocks));
    gpu::AttentionRows layout;
    layout.row_sequence = device.upload(row_sequence);
    layout.row_slot = device.upload(row_slot);
    layout.block_tables = device.upload(tables);
    layout.max_blocks = max_blocks;
    float* out = device.allocate<float>(cpu_out.size());
    const float* device_q = device.upload(q);
    const float* device_slopes = slopes.empty() ? nullptr : device.upload(slopes);
    if (kernel == "split") {
      float* workspace = device.allocate<float>(size_t(gpu::attention_workspace_floats(rows, H, d, max_visible)));
      gpu::paged_attention(device_q, rows, H * d, H, Hkv, d, device_slopes, kv, layout, max_visible, workspace, out, device.native());
    } else {
      std::vector<int32_t> tile_sequence, tile_first_row, tile_first_slot, tile_count;
      int64_t row = 0;
      for (size_t s = 0; s < sequences.size(); ++s) {
        for (int64_t t = 0; t < sequences[s].count; t += gpu::kFlashQueries) {
          tile_sequence.push_back(int32_t(s));
          tile_first_row.push_back(int32_t(row + t));
          tile_first_slot.push_back(int32_t(sequences[s].start + t));
          tile_count.push_back(int32_t(std::min(gpu::kFlashQueries, sequences[s].count - t)));
        }
        row += sequences[s].count;
      }
      gpu::AttentionTiles tiles;
      tiles.sequence = device.upload(tile_sequence);
      tiles.first_row = device.upload(tile_first_row);
      tiles.first_slot = device.upload(tile_first_slot);
      tiles.count = device.upload(tile_count);
      tiles.tiles = int64_t(tile_count.size());
      tiles.block_tables = layout.block_tables;
      tiles.max_blocks = max_blocks;
      gpu::flash_attention_prefill(device_q, H * d, H, Hkv, d, device_slopes, kv, tiles, out, device.native());
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpu", typed(env, device.download(out, cpu_out.size())));
    result.Set("cpu", typed(env, cpu_out));
    result.Set("keys", typed(env, stored_keys));
    result.Set("values", typed(env, stored_values));
    return result;
  });
}

// writeKv({ heads, kvHeads, headDim, kvDtype, numBlocks, qkvStride, qkv: Float32Array [rows · qkvStride],
//           rowBlock, rowSlot: Int32Array [rows], rowValid: Uint8Array [rows], rowPosition: Int32Array [rows] })
//   → { gpuKv, cpuKv: Uint8Array (the pool's key and value bytes), gpuValid, cpuValid: Uint8Array,
//       gpuPositions, cpuPositions: Int32Array [numBlocks · 16] }: the rows' keys and values stored by
//     write_kv and by cpu::write_cache (no rotary) into pools of the same bytes (a fill pattern, so
//     slots neither side should touch are compared too), and the slots' flags and positions as
//     write_kv writes them and as the CPU backend sets them beside write_cache.
Napi::Value WriteKv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const PoolSpec pool_spec = read_pool_spec(env, spec, 512);
  const ModelConfig& config = pool_spec.config;
  const int64_t d = pool_spec.head_dim, num_blocks = pool_spec.num_blocks;
  const int64_t H = config.num_heads, Hkv = config.num_kv_heads;
  const DType kv_dtype = pool_spec.kv_dtype;
  const int64_t qkv_stride = integer(env, spec, "qkvStride", (H + 2 * Hkv) * d, 1 << 20);
  const std::vector<int32_t> row_block = array<Napi::Int32Array>(env, spec, "rowBlock", -1);
  const int64_t rows = int64_t(row_block.size());
  const std::vector<int32_t> row_slot = array<Napi::Int32Array>(env, spec, "rowSlot", rows);
  const std::vector<uint8_t> row_valid = array<Napi::Uint8Array>(env, spec, "rowValid", rows);
  const std::vector<int32_t> row_position = array<Napi::Int32Array>(env, spec, "rowPosition", rows);
  const std::vector<float> qkv = array<Napi::Float32Array>(env, spec, "qkv", rows * qkv_stride);
  std::vector<uint8_t> written(size_t(num_blocks * kKvBlockTokens), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t block = row_block[size_t(r)], slot = row_slot[size_t(r)];
    if (block < 0 || block >= num_blocks || slot < 0 || slot >= kKvBlockTokens) throw input_error(env, "rows must name slots inside the pool");
    if (written[size_t(block * kKvBlockTokens + slot)]++ != 0) throw input_error(env, "rows must name distinct slots");
  }
  return call_core(env, [&] {
    KvPool pool(config, num_blocks, kv_dtype);
    auto* pool_bytes = static_cast<uint8_t*>(pool.keys(0, 0, 0));
    std::fill(pool_bytes, pool_bytes + pool.byte_size(), uint8_t(0xA5));
    const std::vector<uint8_t> initial(pool_bytes, pool_bytes + pool.byte_size());

    cpu::StepPlan plan;
    plan.row_blocks.assign(row_block.begin(), row_block.end());
    plan.row_slots.assign(row_slot.begin(), row_slot.end());
    std::vector<float> cpu_qkv = qkv;
    cpu::write_cache(config, 0, pool, plan, rows, cpu_qkv.data(), qkv_stride, nullptr, nullptr);
    for (int64_t r = 0; r < rows; ++r) {
      pool.valid(row_block[size_t(r)])[row_slot[size_t(r)]] = row_valid[size_t(r)];
      pool.positions(row_block[size_t(r)])[row_slot[size_t(r)]] = row_position[size_t(r)];
    }

    Device device;
    uint8_t* device_pool = device.upload(initial);
    const PoolLayout pool_at = pool_layout(pool);
    gpu::PagedKvWrite kv;
    kv.type = element_of(env, kv_dtype);
    kv.keys = device_pool;
    kv.values = device_pool + pool_at.values_offset_bytes;
    kv.head_stride = pool_at.head_stride;
    kv.block_stride = pool_at.block_stride;
    kv.valid = device.upload(std::vector<uint8_t>(written.size(), 0));
    kv.positions = device.upload(std::vector<int32_t>(written.size(), 0));
    gpu::write_kv(device.upload(qkv), rows, qkv_stride, H, Hkv, d, device.upload(row_block), device.upload(row_slot), device.upload(row_valid),
                  device.upload(row_position), kv, device.native());
    Napi::Object result = Napi::Object::New(env);
    result.Set("gpuKv", typed(env, device.download(device_pool, initial.size())));
    result.Set("cpuKv", typed(env, std::vector<uint8_t>(pool_bytes, pool_bytes + pool.byte_size())));
    result.Set("gpuValid", typed(env, device.download(kv.valid, written.size())));
    result.Set("cpuValid", typed(env, std::vector<uint8_t>(pool.valid(0), pool.valid(0) + written.size())));
    result.Set("gpuPositions", typed(env, device.download(kv.positions, written.size())));
    result.Set("cpuPositions", typed(env, std::vector<int32_t>(pool.positions(0), pool.positions(0) + written.size())));
    return result;
  });
}

// barrierExchange({ values: Int32Array [blocks · threads], threads }) → Int32Array (probes.h)
Napi::Value BarrierExchange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t threads = integer(env, spec, "threads", 1, 256);
  const std::vector<int32_t> values = array<Napi::Int32Array>(env, spec, "values", -1);
  const int64_t blocks = int64_t(values.size()) / threads;
  if (blocks * threads != int64_t(values.size()) || blocks == 0) throw input_error(env, "spec.values must fill whole blocks");
  return call_core(env, [&] {
    Device device;
    int32_t* out = device.allocate<int32_t>(values.size());
    gpu::probe_barrier_exchange(device.upload(values), blocks, int(threads), out, device.native());
    return typed(env, device.download(out, values.size()));
  });
}

// warpOps({ values: Int32Array [threads] }) → Int32Array [9 · threads] (probes.h)
Napi::Value WarpOps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<int32_t> values = array<Napi::Int32Array>(env, spec_object(info), "values", -1);
  return call_core(env, [&] {
    Device device;
    int32_t* out = device.allocate<int32_t>(9 * values.size());
    gpu::probe_warp_ops(device.upload(values), int(values.size()), out, device.native());
    return typed(env, device.download(out, 9 * values.size()));
  });
}

// atomics({ blocks, threads }) → { count, sum }
Napi::Value Atomics(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const int64_t blocks = integer(env, spec, "blocks", 1, 64), threads = integer(env, spec, "threads", 1, 1024);
  return call_core(env, [&] {
    Device device;
    int32_t* count = device.upload(std::vector<int32_t>{0});
    float* sum = device.upload(std::vector<float>{0.0f});
    gpu::probe_atomics(int(blocks), int(threads), count, sum, device.native());
    Napi::Object result = Napi::Object::New(env);
    result.Set("count", double(device.download(count, 1)[0]));
    result.Set("sum", double(device.download(sum, 1)[0]));
    return result;
  });
}

// wmmaTile({ a, b, c: Float32Array [256], dtype: 'bfloat16' | 'float16' }) → { d, a, b }: a and b as
// rounded to dtype, d = a · b + c from one warp's wmma.
Napi::Value WmmaTile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const DType dtype = dtype_of(env, spec);
  if (dtype != DType::BFloat16 && dtype != DType::Float16) throw input_error(env, "spec.dtype must be 'bfloat16' or 'float16'");
  const std::vector<float> a = array<Napi::Float32Array>(env, spec, "a", 256);
  const std::vector<float> b = array<Napi::Float32Array>(env, spec, "b", 256);
  const std::vector<float> c = array<Napi::Float32Array>(env, spec, "c", 256);
  return call_core(env, [&] {
    const std::vector<uint16_t> a_bits = half_bits(a, dtype), b_bits = half_bits(b, dtype);
    std::vector<float> a_rounded(256), b_rounded(256);
    for (size_t i = 0; i < 256; ++i) {
      a_rounded[i] = dtype == DType::BFloat16 ? bf16_to_f32(a_bits[i]) : f16_to_f32(a_bits[i]);
      b_rounded[i] = dtype == DType::BFloat16 ? bf16_to_f32(b_bits[i]) : f16_to_f32(b_bits[i]);
    }
    Device device;
    float* d = device.allocate<float>(256);
    gpu::probe_wmma_tile(device.upload(a_bits), device.upload(b_bits), device.upload(c), dtype == DType::BFloat16, d, device.native());
    Napi::Object result = Napi::Object::New(env);
    result.Set("d", typed(env, device.download(d, 256)));
    result.Set("a", typed(env, a_rounded));
    result.Set("b", typed(env, b_rounded));
    return result;
  });
}

#if !defined(FALCON_CUDA_TEST_REAL)
// misuse(name, index?): runs one of the probes the emulation must refuse (probes.h); throws its error.
Napi::Value Misuse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw input_error(env, "misuse needs a probe name");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  call_core(env, [&] {
    Device device;
    if (name == "sharedIndex") {
      gpu::probe_shared_index(int(integer_argument(info, 1, "index")), device.native());
    } else if (name == "divergentBarrier") {
      gpu::probe_divergent_barrier(device.native());
    } else if (name == "shuffleOutsideMask") {
      gpu::probe_shuffle_outside_mask(device.native());
    } else if (name == "shuffleAfterExit") {
      gpu::probe_shuffle_after_exit(device.native());
    } else if (name == "mixedCollectives") {
      gpu::probe_mixed_collectives(device.native());
    } else if (name == "warpBarrierDeadlock") {
      gpu::probe_warp_barrier_deadlock(device.native());
    } else if (name == "copyOutsideAllocation") {
      float* buffer = device.allocate<float>(4);
      std::vector<float> host(8);
      device.runtime().copy(buffer, host.data(), 8 * sizeof(float), CopyKind::HostToDevice, device.stream());
    } else if (name == "outOfMemory") {
      Device small(open_runtime(1024));
      small.allocate<float>(512);
    } else {
      throw Error(ErrorKind::Input, "no misuse probe " + name);
    }
  });
  return env.Undefined();
}
#endif

// graphReplay({ x, replays }) → { afterCapture, afterReplays }: x[i] += 1 and a copy captured on a
// stream, then the graph launched `replays` times.
Napi::Value GraphReplay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const std::vector<float> x = array<Napi::Float32Array>(env, spec, "x", -1);
  const int64_t replays = integer(env, spec, "replays", 0, 16);
  return call_core(env, [&] {
    Device device;
    float* values = device.upload(x);
    float* snapshot = device.allocate<float>(x.size());
    DeviceRuntime& runtime = device.runtime();
    runtime.begin_capture(device.stream());
    gpu::probe_add_one(values, int64_t(x.size()), device.native());
    runtime.copy(snapshot, values, x.size() * sizeof(float), CopyKind::DeviceToDevice, device.stream());
    falcon::cuda::DeviceGraph* graph = runtime.end_capture(device.stream());
    Napi::Object result = Napi::Object::New(env);
    result.Set("afterCapture", typed(env, device.download(values, x.size())));
    for (int64_t i = 0; i < replays; ++i) runtime.launch_graph(graph, device.stream());
    runtime.destroy_graph(graph);
    result.Set("afterReplays", typed(env, device.download(snapshot, x.size())));
    return result;
  });
}

// timeKernel({ op, iterations, budgetSeconds?, ... }) → seconds per launch, the mean over `iterations`
// launches on one stream after one warm-up launch (with budgetSeconds: as many as fit in it by the
// warm-up's time, at most `iterations`, at least one), timed on the host around stream
// synchronisation (bench/cuda-kernels.mjs;
// the emulated build runs it too, on tiny shapes, so the driver is tested without a GPU). Inputs hold
// pseudo-random values (tensor cores run faster on zeros). Ops and their keys:
//   copy { bytes }: one device-to-device copy (the HBM probe: 2 · bytes moved)
//   gemm_wmma { m, k, n, dtype: bfloat16 | float16 } (float16: split_f16 of float32 x, then the pair
//     GEMM, as linear runs them), gemm_f32 { m, k, n, dtype? (float32 when absent) },
//   gemv { m, k, n, dtype },
//   gemv_int8 { m, k, n }: y = x · wᵀ as kernels.h
//   paged_attention { sequences, context, heads, kvHeads, headDim, dtype }: one decode row per sequence
//   flash_prefill { sequences, context, heads, kvHeads, headDim, dtype }: every token of each sequence
//   draw_tokens { rows, vocab, topP? }: one token per row at temperature 1, over every id, or with topP
//     in (0, 1) over the nucleus of that mass
Napi::Value TimeKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object spec = spec_object(info);
  const std::string op = text(env, spec, "op");
  const int64_t most_iterations = integer(env, spec, "iterations", 1, 100000);
  const Napi::Value budget_value = spec.Get("budgetSeconds");
  const double budget_seconds = budget_value.IsUndefined() ? 0.0 : number(env, spec, "budgetSeconds");
  if (!(budget_seconds >= 0.0 && budget_seconds <= 60.0)) throw input_error(env, "spec.budgetSeconds must be in [0, 60]");
  constexpr int64_t kMaxDim = 65536;
  const auto dim = [&](const char* key) { return integer(env, spec, key, 1, kMaxDim); };
  return call_core(env, [&]() -> Napi::Value {
    Device device;
    uint64_t state = 0x9E3779B97F4A7C15ull;
    const auto next_unit = [&] {  // in [-1, 1)
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      return float(int64_t(state >> 40) - (int64_t(1) << 23)) / float(int64_t(1) << 23);
    };
    const auto random_floats = [&](size_t count) {
      std::vector<float> values(count);
      for (float& value : values) value = next_unit();
      return device.upload(values);
    };
    const auto random_halves = [&](size_t count, DType dtype) {
      std::vector<float> values(count);
      for (float& value : values) value = next_unit();
      return device.upload(half_bits(values, dtype));
    };
    const auto random_weights = [&](size_t count, DType dtype) -> void* {
      if (dtype == DType::Float32) return random_floats(count);
      return random_halves(count, dtype);
    };
    const auto random_int8 = [&](size_t count) {
      std::vector<int8_t> values(count);
      for (int8_t& value : values) value = int8_t(next_unit() * 127.0f);
      return device.upload(values);
    };
    std::function<void()> launch;
    if (op == "copy") {
      const int64_t bytes = integer(env, spec, "bytes", 1, int64_t(1) << 36);
      unsigned char* source = device.allocate<unsigned char>(size_t(bytes));
      unsigned char* destination = device.allocate<unsigned char>(size_t(bytes));
      device.runtime().fill_zero(source, size_t(bytes), device.stream());
      launch = [&device, source, destination, bytes] {
        device.runtime().copy(destination, source, size_t(bytes), CopyKind::DeviceToDevice, device.stream());
      };
    } else if (op == "gemm_wmma" || op == "gemm_f32" || op == "gemv" || op == "gemv_int8") {
      const int64_t m = dim("m"), k = dim("k"), n = dim("n");
      float* y = device.allocate<float>(size_t(m * n));
      const gpu::GemmEpilogue epilogue;
      if (op == "gemm_wmma") {
        const DType dtype = dtype_of(env, spec);
        if (dtype != DType::BFloat16 && dtype != DType::Float16) throw input_error(env, "gemm_wmma takes bfloat16 or float16");
        const uint16_t* w = random_halves(size_t(n * k), dtype);
        const gpu::Element type = element_of(env, dtype);
        if (dtype == DType::BFloat16) {
          const gpu::WmmaInput x{random_halves(size_t(m * k), dtype), nullptr, nullptr};
          launch = [=, &device] { gpu::gemm_wmma(x, type, m, k, w, n, epilogue, y, device.native()); };
        } else {
          // What linear runs for float16 weights: the split of float32 x, then the pair GEMM.
          const float* x = random_floats(size_t(m * k));
          void* staging = device.allocate<unsigned char>(gpu::wmma_input_bytes(type, m, k));
          launch = [=, &device] {
            gpu::gemm_wmma(gpu::stage_wmma_input(x, m, k, type, staging, device.native()), type, m, k, w, n, epilogue, y, device.native());
          };
        }
      } else if (op == "gemm_f32") {
        const DType dtype = spec.Get("dtype").IsUndefined() ? DType::Float32 : dtype_of(env, spec);
        const float* x = random_floats(size_t(m * k));
        if (dtype == DType::Int8) {
          const int8_t* q = random_int8(size_t(n * k));
          const float* scales = random_floats(size_t(n));
          launch = [=, &device] { gpu::gemm_f32(x, m, k, q, gpu::Element::I8, scales, n, epilogue, y, device.native()); };
        } else {
          const void* w = random_weights(size_t(n * k), dtype);
          const gpu::Element type = element_of(env, dtype);
          launch = [=, &device] { gpu::gemm_f32(x, m, k, w, type, nullptr, n, epilogue, y, device.native()); };
        }
      } else if (op == "gemv") {
        const DType dtype = dtype_of(env, spec);
        const float* x = random_floats(size_t(m * k));
        const void* w = random_weights(size_t(n * k), dtype);
        const gpu::Element type = element_of(env, dtype);
        launch = [=, &device] { gpu::gemv(x, m, k, w, type, n, epilogue, y, device.native()); };
      } else {
        const int8_t* device_q = random_int8(size_t(n * k));
        const float* x = random_floats(size_t(m * k));
        const float* scales = random_floats(size_t(n));
        launch = [=, &device] { gpu::gemv_int8(x, m, k, device_q, scales, n, epilogue, y, device.native()); };
      }
    } else if (op == "paged_attention" || op == "flash_prefill") {
      const int64_t sequences = dim("sequences"), context = integer(env, spec, "context", 1, 1 << 20);
      const int64_t heads = integer(env, spec, "heads", 1, 256), kv_heads = integer(env, spec, "kvHeads", 1, 256);
      const int64_t head_dim = integer(env, spec, "headDim", 1, gpu::kAttentionMaxHeadDim);
      if (heads % kv_heads != 0) throw input_error(env, "spec.heads must be a multiple of spec.kvHeads");
      const DType dtype = dtype_of(env, spec);
      const int64_t blocks_per_sequence = (context + gpu::kKvTokens - 1) / gpu::kKvTokens;
      const int64_t blocks = sequences * blocks_per_sequence;
      const size_t elements = size_t(kv_heads * blocks * gpu::kKvTokens * head_dim);
      gpu::PagedKv kv;
      kv.type = element_of(env, dtype);
      kv.keys = random_weights(elements, dtype);
      kv.values = random_weights(elements, dtype);
      kv.head_stride = blocks * gpu::kKvTokens * head_dim;
      kv.block_stride = gpu::kKvTokens * head_dim;
      std::vector<uint8_t> valid(size_t(blocks * gpu::kKvTokens), 1);
      std::vector<int32_t> positions(valid.size()), tables(static_cast<size_t>(blocks));
      for (size_t slot = 0; slot < positions.size(); ++slot) positions[slot] = int32_t(slot % size_t(blocks_per_sequence * gpu::kKvTokens));
      for (size_t block = 0; block < tables.size(); ++block) tables[block] = int32_t(block);
      kv.valid = device.upload(valid);
      kv.positions = device.upload(positions);
      const int32_t* block_tables = device.upload(tables);
      if (op == "paged_attention") {
        std::vector<int32_t> row_sequence(static_cast<size_t>(sequences)), row_slot(static_cast<size_t>(sequences), int32_t(context - 1));
        for (int64_t s = 0; s < sequences; ++s) row_sequence[size_t(s)] = int32_t(s);
        gpu::AttentionRows layout;
        layout.row_sequence = device.upload(row_sequence);
        layout.row_slot = device.upload(row_slot);
        layout.block_tables = block_tables;
        layout.max_blocks = blocks_per_sequence;
        const float* q = random_floats(size_t(sequences * heads * head_dim));
        float* workspace = device.allocate<float>(size_t(gpu::attention_workspace_floats(sequences, heads, head_dim, context)));
        float* out = device.allocate<float>(size_t(sequences * heads * head_dim));
        launch = [=, &device] {
          gpu::paged_attention(q, sequences, heads * head_dim, heads, kv_heads, head_dim, nullptr, kv, layout, context, workspace, out,
                               device.native());
        };
      } else {
        if (head_dim > gpu::kFlashMaxHeadDim) throw input_error(env, "flash_prefill takes headDim up to " + std::to_string(gpu::kFlashMaxHeadDim));
        std::vector<int32_t> tile_sequence, tile_first_row, tile_first_slot, tile_count;
        for (int64_t s = 0; s < sequences; ++s) {
          for (int64_t t = 0; t < context; t += gpu::kFlashQueries) {
            tile_sequence.push_back(int32_t(s));
            tile_first_row.push_back(int32_t(s * context + t));
            tile_first_slot.push_back(int32_t(t));
            tile_count.push_back(int32_t(std::min(gpu::kFlashQueries, context - t)));
          }
        }
        gpu::AttentionTiles tiles;
        tiles.sequence = device.upload(tile_sequence);
        tiles.first_row = device.upload(tile_first_row);
        tiles.first_slot = device.upload(tile_first_slot);
        tiles.count = device.upload(tile_count);
        tiles.tiles = int64_t(tile_count.size());
        tiles.block_tables = block_tables;
        tiles.max_blocks = blocks_per_sequence;
        const int64_t rows = sequences * context;
        const float* q = random_floats(size_t(rows * heads * head_dim));
        float* out = device.allocate<float>(size_t(rows * heads * head_dim));
        launch = [=, &device] { gpu::flash_attention_prefill(q, heads * head_dim, heads, kv_heads, head_dim, nullptr, kv, tiles, out, device.native()); };
      }
    } else if (op == "draw_tokens") {
      const int64_t rows = dim("rows"), vocab = integer(env, spec, "vocab", 1, gpu::kDrawMaxIds);
      const float* logits = random_floats(size_t(rows * vocab));
      std::vector<int32_t> row_ids(static_cast<size_t>(rows));
      std::vector<double> draws(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        row_ids[size_t(r)] = int32_t(r);
        draws[size_t(r)] = (double(r) + 0.5) / double(rows);
      }
      const int32_t* device_rows = device.upload(row_ids);
      const int32_t* allowed = device.upload(std::vector<int32_t>(row_ids.size(), int32_t(vocab)));
      const double* temperatures = device.upload(std::vector<double>(row_ids.size(), 1.0));
      const Napi::Value top_p_value = spec.Get("topP");
      const double top_p = top_p_value.IsUndefined() ? 0.0 : number(env, spec, "topP");
      if (!(top_p == 0 || (top_p > 0 && top_p < 1))) throw input_error(env, "spec.topP must lie in (0, 1)");
      const double* top_ps = device.upload(std::vector<double>(row_ids.size(), top_p));
      const double* device_draws = device.upload(draws);
      int32_t* tokens = device.allocate<int32_t>(row_ids.size());
      launch = [=, &device] {
        gpu::draw_tokens(logits, vocab, device_rows, allowed, temperatures, top_ps, device_draws, rows, tokens, device.native());
      };
    } else {
      throw Error(ErrorKind::Input,
                  "timeKernel has no op " + op + " (copy, gemm_wmma, gemm_f32, gemv, gemv_int8, paged_attention, flash_prefill, draw_tokens)");
    }
    const auto warm_up_start = std::chrono::steady_clock::now();
    launch();
    device.runtime().synchronize(device.stream());
    const std::chrono::duration<double> warm_up = std::chrono::steady_clock::now() - warm_up_start;
    const int64_t iterations =
        budget_seconds > 0.0 ? std::clamp(int64_t(budget_seconds / std::max(warm_up.count(), 1e-7)), int64_t(1), most_iterations) : most_iterations;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iterations; ++i) launch();
    device.runtime().synchronize(device.stream());
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    return Napi::Number::New(env, elapsed.count() / double(iterations));
  });
}

// cudaError(code) throws the falcon error a CUDA runtime failure with that cudaError_t becomes.
Napi::Value CudaError(const Napi::CallbackInfo& info) {
  const int64_t code = integer_argument(info, 0, "code");
  call_core(info.Env(), [&] { throw falcon::cuda::cuda_error(int(code), "cudaTestCall", "the runtime's description"); });
  return info.Env().Undefined();
}

#if defined(FALCON_CUDA_REAL)
// realDevice(ordinal) → { name, computeMajor, computeMinor, totalBytes }: opens the real CUDA runtime
// (builds with nvcc only), for bench/cuda-check.sh; throws the typed error when there is no usable GPU.
Napi::Value RealDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t ordinal = integer_argument(info, 0, "ordinal");
  const falcon::cuda::DeviceInfo device = call_core(env, [&] { return falcon::cuda::make_cuda_runtime(int(ordinal))->info(); });
  Napi::Object result = Napi::Object::New(env);
  result.Set("name", device.name);
  result.Set("computeMajor", device.compute_major);
  result.Set("computeMinor", device.compute_minor);
  result.Set("totalBytes", double(device.total_bytes));
  return result;
}
#endif

}  // namespace

#if defined(FALCON_CUDA_TEST_REAL)
Napi::Object CudaDeviceForTest(Napi::Env env) {
#else
Napi::Object CudaEmulationForTest(Napi::Env env) {
#endif
  Napi::Object object = Napi::Object::New(env);
  object.Set("embedding", Napi::Function::New(env, Embedding));
  object.Set("gatherRows", Napi::Function::New(env, GatherRows));
  object.Set("addLayerNorm", Napi::Function::New(env, AddLayerNorm));
  object.Set("biasGelu", Napi::Function::New(env, BiasGelu));
  object.Set("rotary", Napi::Function::New(env, Rotary));
  object.Set("matmul", Napi::Function::New(env, Matmul));
  object.Set("splitF16", Napi::Function::New(env, SplitF16));
  object.Set("kernelRefusals", Napi::Function::New(env, KernelRefusals));
  object.Set("topK", Napi::Function::New(env, TopK));
  object.Set("sampleRanked", Napi::Function::New(env, SampleRanked));
  object.Set("drawTokens", Napi::Function::New(env, DrawTokens));
  object.Set("attention", Napi::Function::New(env, Attention));
  object.Set("writeKv", Napi::Function::New(env, WriteKv));
  object.Set("barrierExchange", Napi::Function::New(env, BarrierExchange));
  object.Set("warpOps", Napi::Function::New(env, WarpOps));
  object.Set("atomics", Napi::Function::New(env, Atomics));
  object.Set("wmmaTile", Napi::Function::New(env, WmmaTile));
#if !defined(FALCON_CUDA_TEST_REAL)
  object.Set("misuse", Napi::Function::New(env, Misuse));
#endif
  object.Set("timeKernel", Napi::Function::New(env, TimeKernel));
  object.Set("graphReplay", Napi::Function::New(env, GraphReplay));
  object.Set("cudaError", Napi::Function::New(env, CudaError));
#if defined(FALCON_CUDA_REAL)
  object.Set("realDevice", Napi::Function::New(env, RealDevice));
#endif
  return object;
}

}  // namespace falcon::binding
