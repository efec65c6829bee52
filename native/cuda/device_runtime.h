#pragma once
// The CUDA runtime calls the backend makes, behind one thin interface: device memory, copies,
// streams, events and graph capture. Two implementations: the real one over the CUDA runtime
// (device_runtime_cuda.cu, compiled only by nvcc), and an emulated one on the host
// (device_runtime_emulated.cpp) that the emulated kernels (cuda_compat.h) and the tests run on.
// Every failure is a falcon::Error whose message says what to do (cuda_errors.h).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace falcon::cuda {

// Opaque handles; what they hold is the implementation's.
struct DeviceStream;
struct DeviceEvent;
struct DeviceGraph;

enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };

struct DeviceInfo {
  std::string name;
  int ordinal = 0;
  int compute_major = 0, compute_minor = 0;
  uint64_t total_bytes = 0;
  bool emulated = false;
};

class DeviceRuntime {
 public:
  virtual ~DeviceRuntime() = default;
  virtual DeviceInfo info() const = 0;
  // Makes this device the calling thread's current one (the CUDA runtime's device is per thread, and
  // a backend is called from the engine's thread and from libuv's).
  virtual void bind_thread() = 0;
  // Device memory not yet allocated.
  virtual uint64_t free_bytes() = 0;

  // Throws Error(State) with the fix when the device has not `bytes` free. free(nullptr) does nothing.
  virtual void* allocate(size_t bytes) = 0;
  virtual void free(void* pointer) = 0;
  // Page-locked host memory (cudaMallocHost): the device copies from it asynchronously and at the
  // bus's full rate. Throws Error(State) when the host refuses it. free_host(nullptr) does nothing.
  virtual void* allocate_host(size_t bytes) = 0;
  virtual void free_host(void* pointer) = 0;
  // Ordered on `stream`; host memory must stay valid until the stream reaches the copy.
  virtual void copy(void* destination, const void* source, size_t bytes, CopyKind kind, DeviceStream* stream) = 0;
  virtual void fill_zero(void* destination, size_t bytes, DeviceStream* stream) = 0;

  virtual DeviceStream* create_stream() = 0;
  virtual void destroy_stream(DeviceStream* stream) = 0;
  virtual void synchronize(DeviceStream* stream) = 0;
  // The stream as the kernel launchers of this runtime's build take it (a cudaStream_t of that build).
  virtual void* native_stream(DeviceStream* stream) = 0;

  virtual DeviceEvent* create_event() = 0;
  virtual void destroy_event(DeviceEvent* event) = 0;
  virtual void record(DeviceEvent* event, DeviceStream* stream) = 0;
  // `stream` waits for the work recorded by `event` before it runs what is issued after.
  virtual void wait(DeviceStream* stream, DeviceEvent* event) = 0;
  virtual void synchronize(DeviceEvent* event) = 0;

  // Between begin_capture and end_capture, work issued on `stream` is recorded, not run; the graph
  // replays it, in order, on each launch_graph.
  virtual void begin_capture(DeviceStream* stream) = 0;
  virtual DeviceGraph* end_capture(DeviceStream* stream) = 0;
  virtual void launch_graph(DeviceGraph* graph, DeviceStream* stream) = 0;
  virtual void destroy_graph(DeviceGraph* graph) = 0;
};

// The host emulation; `capacity_bytes` bounds its device memory (so running out can be tested).
std::unique_ptr<DeviceRuntime> make_emulated_runtime(uint64_t capacity_bytes);

#if defined(FALCON_CUDA_REAL)
// The CUDA runtime on device `ordinal`; throws Error(Config) with the fix when there is no usable
// device (no GPU, a driver older than the runtime, an architecture the build has no code for).
std::unique_ptr<DeviceRuntime> make_cuda_runtime(int ordinal);
#endif

}  // namespace falcon::cuda
