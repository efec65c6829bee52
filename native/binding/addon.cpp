// Entry point of the falcon-native addon: registers the native classes and process-wide settings.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/kv_cache.h"
#include "../core/memory.h"
#include "../core/model.h"
#include "../core/sampler.h"
#include "../core/thread_pool.h"
#include "../cpu/cpu_features.h"
#include "../cpu/ops.h"
#include "../cpu/probes.h"
#include "addon_data.h"
#include "cache_wrap.h"
#include "cuda_test.h"
#include "device_choice.h"
#include "step_test.h"
#include "matmul_test.h"
#include "engine_wrap.h"
#include "weight_file_wrap.h"
#include "model_wrap.h"
#include "napi_util.h"

namespace falcon::binding {
namespace {

Napi::Value NumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), global_thread_pool()->num_threads());
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  const int64_t threads = integer_argument(info, 0, "threads");
  if (threads < 1 || threads > 1024) throw make_error(info.Env(), ErrorKind::Input, "threads must be in [1, 1024]");
  call_core(info.Env(), [&] { set_global_thread_count(int(threads)); });
  return info.Env().Undefined();
}

// memoryStats() → { liveBytes, liveAllocations, threadScratchBytes, threadScratchAllocations }: the
// core's counted allocations (memory.h); result arrays count until JavaScript collects them.
Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const falcon::MemoryStats stats = memory_stats();
  Napi::Object result = Napi::Object::New(env);
  result.Set("liveBytes", double(stats.live_bytes));
  result.Set("liveAllocations", double(stats.live_allocations));
  result.Set("threadScratchBytes", double(stats.thread_scratch_bytes));
  result.Set("threadScratchAllocations", double(stats.thread_scratch_allocations));
  return result;
}

// memoryAvailable() → bytes this process can still allocate (MemAvailable within the cgroup's limit).
Napi::Value MemoryAvailable(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(available_memory_bytes()));
}

// A validated config from argument 0, for the estimates below.
ModelConfig estimate_config(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw make_error(env, ErrorKind::Config, "a model config object is required");
  ModelConfig config = read_config(env, info[0].As<Napi::Object>());
  call_core(env, [&] { config.validate(); });
  return config;
}

// modelMemoryBytes(config) → the bytes new NativeModel(config) allocates (saturating at 2^64 − 1).
Napi::Value ModelMemoryBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(model_memory_bytes(estimate_config(info)).value()));
}

// cacheMemoryBytes(config, batchSize, maxLength) → the bytes new NativeKvCache(model, batchSize, maxLength) allocates.
Napi::Value CacheMemoryBytes(const Napi::CallbackInfo& info) {
  const ModelConfig config = estimate_config(info);
  const int64_t batch_size = integer_argument(info, 1, "batchSize");
  const int64_t max_length = integer_argument(info, 2, "maxLength");
  if (batch_size <= 0 || max_length <= 0) throw make_error(info.Env(), ErrorKind::Input, "batchSize and maxLength must be positive");
  return Napi::Number::New(info.Env(), double(cache_memory_bytes(config, batch_size, max_length).value()));
}

// cpuInfo() → { isa, supportedIsas, features }
Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::CpuFeatures& f = cpu::cpu_features();
  Napi::Object result = Napi::Object::New(env);
  result.Set("isa", Napi::String::New(env, cpu::isa_name(cpu::active_isa())));
  auto isas = cpu::supported_isas();
  Napi::Array supported = Napi::Array::New(env, isas.size());
  for (size_t i = 0; i < isas.size(); ++i) supported.Set(uint32_t(i), Napi::String::New(env, cpu::isa_name(isas[i])));
  result.Set("supportedIsas", supported);
  Napi::Object features = Napi::Object::New(env);
  const std::pair<const char*, bool> flags[] = {
      {"avx2", f.avx2}, {"fma", f.fma}, {"f16c", f.f16c}, {"avx512f", f.avx512f}, {"avx512bw", f.avx512bw},
      {"avx512vl", f.avx512vl}, {"avx512dq", f.avx512dq}, {"avx512_bf16", f.avx512_bf16},
      {"avx512_vnni", f.avx512_vnni}, {"avx_vnni", f.avx_vnni}, {"osSavesYmm", f.os_saves_ymm}, {"osSavesZmm", f.os_saves_zmm}};
  for (const auto& [name, value] : flags) features.Set(name, Napi::Boolean::New(env, value));
  result.Set("features", features);
  return result;
}

// defaultBackend() → the backend models loaded with device "auto" run on.
Napi::Value DefaultBackend(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), call_core(info.Env(), [] { return auto_backend_name(); }));
}

// cudaKernelsBuilt() → whether this binary has the real CUDA kernels (else device "cuda" needs FALCON_CUDA_EMULATE=1).
Napi::Value CudaKernelsBuilt(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), cuda_kernels_built()); }

// setIsa(name): picks a kernel family this CPU supports (tests run the fixtures through each).
Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  cpu::Isa isa;
  if (info.Length() < 1 || !info[0].IsString() || !cpu::parse_isa(info[0].As<Napi::String>().Utf8Value(), &isa)) {
    throw make_error(info.Env(), ErrorKind::Input, "isa must be 'scalar', 'avx2' or 'avx512'");
  }
  call_core(info.Env(), [&] { cpu::set_active_isa(isa); });
  return info.Env().Undefined();
}

// probeMachine({ bandwidthBytes }) → Promise<{ readBytesPerSecond, f32FlopsPerSecond, bf16FlopsPerSecond, int8OpsPerSecond }>
Napi::Value ProbeMachine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t bytes = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : (int64_t(1) << 30);
  if (bytes < (int64_t(1) << 20) || bytes > (int64_t(1) << 36)) throw make_error(env, ErrorKind::Input, "probe size must be between 1 MiB and 64 GiB");
  struct Result {
    double read = 0, f32 = 0, bf16 = 0, int8 = 0;
  };
  auto result = std::make_shared<Result>();
  auto deferred = Napi::Promise::Deferred::New(env);
  // A plain AsyncWorker: the probe holds no JavaScript data.
  class ProbeWorker : public Napi::AsyncWorker {
   public:
    ProbeWorker(Napi::Env e, Napi::Promise::Deferred d, std::shared_ptr<Result> r, int64_t b)
        : Napi::AsyncWorker(e), deferred_(d), result_(std::move(r)), bytes_(b) {}
    void Execute() override {
      ThreadPoolPin pin;
      result_->read = cpu::probe_read_bandwidth(bytes_, 5);
      result_->f32 = cpu::probe_peak_ops(cpu::PeakOp::F32Fma);
      result_->bf16 = cpu::probe_peak_ops(cpu::PeakOp::Bf16Dot);
      result_->int8 = cpu::probe_peak_ops(cpu::PeakOp::Int8Dot);
    }
    void OnOK() override {
      Napi::Object out = Napi::Object::New(Env());
      out.Set("readBytesPerSecond", result_->read);
      out.Set("f32FlopsPerSecond", result_->f32);
      out.Set("bf16FlopsPerSecond", result_->bf16);
      out.Set("int8OpsPerSecond", result_->int8);
      deferred_.Resolve(out);
    }
    void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

   private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<Result> result_;
    int64_t bytes_;
  };
  (new ProbeWorker(env, deferred, result, bytes))->Queue();
  return deferred.Promise();
}

// alibiSlopes(numHeads) → Float32Array: the per-head ALiBi slopes, for checking against references.
Napi::Value AlibiSlopes(const Napi::CallbackInfo& info) {
  const int64_t heads = integer_argument(info, 0, "numHeads");
  if (heads < 1 || heads > 65536) throw make_error(info.Env(), ErrorKind::Input, "numHeads must be in [1, 65536]");
  const std::vector<float> slopes = compute_alibi_slopes(heads);
  return adopt_floats(info.Env(), std::make_unique<TrackedVector<float>>(slopes.begin(), slopes.end()));
}

// rotaryTables(headDim, theta, scaling, factor, maxPositionEmbeddings, positions, sequenceLength)
//   → { cos, sin }, each [positions, headDim / 2]
Napi::Value RotaryTables(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModelConfig config;
  config.hidden_dim = integer_argument(info, 0, "headDim");
  config.num_heads = 1;
  config.num_kv_heads = 1;
  if (config.hidden_dim < 2 || config.hidden_dim % 2 != 0 || config.hidden_dim > 65536) {
    throw make_error(env, ErrorKind::Input, "headDim must be an even number in [2, 65536]");
  }
  config.position_encoding = PositionEncoding::Rotary;
  config.rope_theta = info[1].ToNumber().DoubleValue();
  const std::string scaling = info[2].ToString().Utf8Value();
  config.rope_scaling = scaling == "linear" ? RopeScaling::Linear : scaling == "dynamic" ? RopeScaling::Dynamic : RopeScaling::None;
  config.rope_scaling_factor = info[3].ToNumber().DoubleValue();
  config.max_position_embeddings = integer_argument(info, 4, "maxPositionEmbeddings");
  Napi::Int32Array positions;
  if (!optional_typed_array(info, 5, "positions", &positions)) throw make_error(env, ErrorKind::Input, "positions is required");
  const int64_t sequence_length = integer_argument(info, 6, "sequenceLength");
  const size_t count = positions.ElementLength();
  const size_t half = size_t(config.hidden_dim / 2);
  call_core(env, [&] { require_memory(ByteCount(count) * half * 2 * sizeof(float), ErrorKind::Input, "rotary tables"); });
  auto cos = std::make_unique<TrackedVector<float>>(count * half);
  auto sin = std::make_unique<TrackedVector<float>>(count * half);
  cpu::rotary_tables(config, positions.Data(), int64_t(count), sequence_length, cos->data(), sin->data());
  Napi::Object result = Napi::Object::New(env);
  result.Set("cos", adopt_floats(env, std::move(cos)));
  result.Set("sin", adopt_floats(env, std::move(sin)));
  return result;
}

// sampleForTest(logits, allowed, rows, config, stream) → Int32Array[rows]: one SequenceSampler samples
// each of `rows` consecutive rows of logits (each logits.length / rows long) from its first `allowed` ids.
// For tests against src/samplers.ts.
Napi::Value SampleForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float32Array logits;
  if (!optional_typed_array(info, 0, "logits", &logits)) throw make_error(env, ErrorKind::Input, "logits are required");
  const int64_t rows = integer_argument(info, 2, "rows");
  const int64_t length = int64_t(logits.ElementLength());
  if (rows <= 0 || length % rows != 0) throw make_error(env, ErrorKind::Input, "rows must be a positive divisor of logits.length");
  const int64_t row_length = length / rows;
  // One allowed count for every row, or one per row (an Int32Array), to exercise scratch growth.
  std::vector<int64_t> allowed(static_cast<size_t>(rows));
  Napi::Int32Array allowed_per_row;
  if (info.Length() > 1 && info[1].IsTypedArray()) {
    optional_typed_array(info, 1, "allowed", &allowed_per_row);
    if (int64_t(allowed_per_row.ElementLength()) != rows) throw make_error(env, ErrorKind::Input, "allowed needs one count per row");
    for (int64_t row = 0; row < rows; ++row) allowed[size_t(row)] = allowed_per_row[size_t(row)];
  } else {
    std::fill(allowed.begin(), allowed.end(), integer_argument(info, 1, "allowed"));
  }
  for (int64_t count : allowed) {
    if (count <= 0 || count > row_length) throw make_error(env, ErrorKind::Input, "allowed must be in [1, row length]");
  }
  const SamplerParams params = read_sampler_params(env, info.Length() > 3 ? info[3] : env.Undefined());
  const int64_t stream = integer_argument(info, 4, "stream");
  if (stream < 0 || stream > int64_t(UINT32_MAX)) throw make_error(env, ErrorKind::Input, "stream must be in [0, 2^32)");
  Napi::Int32Array tokens = Napi::Int32Array::New(env, size_t(rows));
  call_core(env, [&] {
    SequenceSampler sampler(params, uint32_t(stream));
    for (int64_t row = 0; row < rows; ++row) tokens[size_t(row)] = sampler.sample(logits.Data() + row * row_length, allowed[size_t(row)]);
  });
  return tokens;
}

// tokenLogprobsForTest(logits, allowed, chosen, top) → { logprob, tokens: Int32Array, logprobs: Float32Array }
Napi::Value TokenLogprobsForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float32Array logits;
  if (!optional_typed_array(info, 0, "logits", &logits)) throw make_error(env, ErrorKind::Input, "logits are required");
  const int64_t allowed = integer_argument(info, 1, "allowed");
  if (allowed > int64_t(logits.ElementLength())) throw make_error(env, ErrorKind::Input, "allowed exceeds logits.length");
  const int64_t chosen = integer_argument(info, 2, "chosen");
  if (chosen < 0 || chosen > INT32_MAX) throw make_error(env, ErrorKind::Input, "chosen must be a token id");
  const int64_t top = integer_argument(info, 3, "top");
  std::vector<TokenLogprob> best;
  const float logprob = call_core(env, [&] { return token_logprobs(logits.Data(), allowed, int32_t(chosen), top, &best); });
  Napi::Int32Array tokens = Napi::Int32Array::New(env, best.size());
  Napi::Float32Array logprobs = Napi::Float32Array::New(env, best.size());
  for (size_t i = 0; i < best.size(); ++i) {
    tokens[i] = best[i].token;
    logprobs[i] = best[i].logprob;
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("logprob", Napi::Number::New(env, logprob));
  result.Set("tokens", tokens);
  result.Set("logprobs", logprobs);
  return result;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function model = ModelWrap::Define(env);
  Napi::Function cache = CacheWrap::Define(env);
  data->model_constructor = Napi::Persistent(model);
  data->cache_constructor = Napi::Persistent(cache);
  Napi::Function weight_file = WeightFileWrap::Define(env);
  data->weight_file_constructor = Napi::Persistent(weight_file);
  env.SetInstanceData(data);
  exports.Set("NativeModel", model);
  exports.Set("NativeKvCache", cache);
  exports.Set("NativeWeightFile", weight_file);
  exports.Set("NativeEngine", EngineWrap::Define(env));
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("alibiSlopes", Napi::Function::New(env, AlibiSlopes));
  exports.Set("cpuInfo", Napi::Function::New(env, CpuInfo));
  exports.Set("defaultBackend", Napi::Function::New(env, DefaultBackend));
  exports.Set("cudaKernelsBuilt", Napi::Function::New(env, CudaKernelsBuilt));
  exports.Set("probeMachine", Napi::Function::New(env, ProbeMachine));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa));
  exports.Set("rotaryTables", Napi::Function::New(env, RotaryTables));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats));
  exports.Set("memoryAvailable", Napi::Function::New(env, MemoryAvailable));
  exports.Set("modelMemoryBytes", Napi::Function::New(env, ModelMemoryBytes));
  exports.Set("cacheMemoryBytes", Napi::Function::New(env, CacheMemoryBytes));
  exports.Set("runStepForTest", Napi::Function::New(env, RunStepForTest));
  exports.Set("matmulForTest", Napi::Function::New(env, MatmulForTest));
  exports.Set("stepRunnerForTest", Napi::Function::New(env, StepRunnerForTest));
  exports.Set("sampleForTest", Napi::Function::New(env, SampleForTest));
  exports.Set("tokenLogprobsForTest", Napi::Function::New(env, TokenLogprobsForTest));
  exports.Set("cudaEmulationForTest", CudaEmulationForTest(env));
#if defined(FALCON_CUDA_REAL)
  exports.Set("cudaDeviceForTest", CudaDeviceForTest(env));
#endif
  return exports;
}

}  // namespace falcon::binding

static Napi::Object InitFalconNative(Napi::Env env, Napi::Object exports) { return falcon::binding::Init(env, exports); }

NODE_API_MODULE(falcon_native, InitFalconNative)
