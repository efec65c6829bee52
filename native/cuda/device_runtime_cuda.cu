// The DeviceRuntime over the CUDA runtime (linked statically): compiled only by nvcc, when the build
// has CUDA (CMakeLists.txt, FALCON_CUDA). Every cudaError_t becomes a falcon::Error with its fix.
#include <cuda_runtime.h>

#include "cuda_compat.h"
#include "cuda_errors.h"
#include "device_runtime.h"

namespace falcon::cuda {

static_assert(int(cudaErrorMemoryAllocation) == int(CudaErrorCode::MemoryAllocation), "cudaError_t values");
static_assert(int(cudaErrorInitializationError) == int(CudaErrorCode::InitializationError), "cudaError_t values");
static_assert(int(cudaErrorInsufficientDriver) == int(CudaErrorCode::InsufficientDriver), "cudaError_t values");
static_assert(int(cudaErrorNoDevice) == int(CudaErrorCode::NoDevice), "cudaError_t values");
static_assert(int(cudaErrorInvalidDevice) == int(CudaErrorCode::InvalidDevice), "cudaError_t values");
static_assert(int(cudaErrorNoKernelImageForDevice) == int(CudaErrorCode::NoKernelImageForDevice), "cudaError_t values");
static_assert(int(cudaErrorUnsupportedPtxVersion) == int(CudaErrorCode::UnsupportedPtxVersion), "cudaError_t values");
static_assert(int(cudaErrorStreamCaptureUnsupported) == int(CudaErrorCode::StreamCaptureUnsupported), "cudaError_t values");

namespace {

void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clears a non-sticky error so the next call does not report it again
    throw cuda_error(int(status), call, cudaGetErrorString(status));
  }
}

cudaStream_t native(DeviceStream* stream) { return reinterpret_cast<cudaStream_t>(stream); }

class CudaRuntime final : public DeviceRuntime {
 public:
  explicit CudaRuntime(int ordinal) : ordinal_(ordinal) {
    int count = 0;
    check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (ordinal < 0 || ordinal >= count) throw cuda_error(int(cudaErrorInvalidDevice), "cudaSetDevice", "device " + std::to_string(ordinal) + " of " + std::to_string(count));
    check(cudaSetDevice(ordinal), "cudaSetDevice");
    check(cudaGetDeviceProperties(&properties_, ordinal), "cudaGetDeviceProperties");
  }

  DeviceInfo info() const override {
    DeviceInfo info;
    info.name = properties_.name;
    info.ordinal = ordinal_;
    info.compute_major = properties_.major;
    info.compute_minor = properties_.minor;
    info.total_bytes = properties_.totalGlobalMem;
    return info;
  }

  void bind_thread() override { check(cudaSetDevice(ordinal_), "cudaSetDevice"); }
  uint64_t free_bytes() override {
    size_t free = 0, total = 0;
    check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    return free;
  }

  void* allocate(size_t bytes) override {
    void* pointer = nullptr;
    check(cudaMalloc(&pointer, bytes), "cudaMalloc");
    return pointer;
  }
  void free(void* pointer) override { check(cudaFree(pointer), "cudaFree"); }
  void* allocate_host(size_t bytes) override {
    void* pointer = nullptr;
    check(cudaMallocHost(&pointer, bytes), "cudaMallocHost");
    return pointer;
  }
  void free_host(void* pointer) override { check(cudaFreeHost(pointer), "cudaFreeHost"); }

  void copy(void* destination, const void* source, size_t bytes, CopyKind kind, DeviceStream* stream) override {
    const cudaMemcpyKind native_kind = kind == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
                                       : kind == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                                                        : cudaMemcpyDeviceToDevice;
    check(cudaMemcpyAsync(destination, source, bytes, native_kind, native(stream)), "cudaMemcpyAsync");
  }
  void fill_zero(void* destination, size_t bytes, DeviceStream* stream) override {
    check(cudaMemsetAsync(destination, 0, bytes, native(stream)), "cudaMemsetAsync");
  }

  DeviceStream* create_stream() override {
    cudaStream_t stream = nullptr;
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    return reinterpret_cast<DeviceStream*>(stream);
  }
  void destroy_stream(DeviceStream* stream) override { check(cudaStreamDestroy(native(stream)), "cudaStreamDestroy"); }
  void synchronize(DeviceStream* stream) override { check(cudaStreamSynchronize(native(stream)), "cudaStreamSynchronize"); }
  void* native_stream(DeviceStream* stream) override { return native(stream); }

  DeviceEvent* create_event() override {
    cudaEvent_t event = nullptr;
    check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
    return reinterpret_cast<DeviceEvent*>(event);
  }
  void destroy_event(DeviceEvent* event) override { check(cudaEventDestroy(reinterpret_cast<cudaEvent_t>(event)), "cudaEventDestroy"); }
  void record(DeviceEvent* event, DeviceStream* stream) override {
    check(cudaEventRecord(reinterpret_cast<cudaEvent_t>(event), native(stream)), "cudaEventRecord");
  }
  void wait(DeviceStream* stream, DeviceEvent* event) override {
    check(cudaStreamWaitEvent(native(stream), reinterpret_cast<cudaEvent_t>(event), 0), "cudaStreamWaitEvent");
  }
  void synchronize(DeviceEvent* event) override { check(cudaEventSynchronize(reinterpret_cast<cudaEvent_t>(event)), "cudaEventSynchronize"); }

  void begin_capture(DeviceStream* stream) override {
    check(cudaStreamBeginCapture(native(stream), cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  }
  DeviceGraph* end_capture(DeviceStream* stream) override {
    cudaGraph_t graph = nullptr;
    check(cudaStreamEndCapture(native(stream), &graph), "cudaStreamEndCapture");
    cudaGraphExec_t executable = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&executable, graph, 0);
    cudaGraphDestroy(graph);
    check(status, "cudaGraphInstantiate");
    return reinterpret_cast<DeviceGraph*>(executable);
  }
  void launch_graph(DeviceGraph* graph, DeviceStream* stream) override {
    check(cudaGraphLaunch(reinterpret_cast<cudaGraphExec_t>(graph), native(stream)), "cudaGraphLaunch");
  }
  void destroy_graph(DeviceGraph* graph) override { check(cudaGraphExecDestroy(reinterpret_cast<cudaGraphExec_t>(graph)), "cudaGraphExecDestroy"); }

 private:
  int ordinal_;
  cudaDeviceProp properties_{};
};

}  // namespace

void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

std::unique_ptr<DeviceRuntime> make_cuda_runtime(int ordinal) { return std::make_unique<CudaRuntime>(ordinal); }

}  // namespace falcon::cuda
