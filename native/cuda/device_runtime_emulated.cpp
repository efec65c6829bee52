// The emulated DeviceRuntime: device memory is host memory, work runs when it is issued (unless its
// stream is capturing), so every stream is trivially in order and events need only be checked. It
// checks what a GPU would fault on or silently corrupt: copies that leave a device allocation,
// unknown pointers, freeing twice, capture misuse.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "cuda_compat.h"
#include "cuda_errors.h"
#include "device_runtime.h"

namespace falcon::cuda {

struct DeviceStream {
  cuda_emu::Stream emulated;
};
// Work runs when it is issued, so an event is reached as soon as it is recorded: waiting on one has
// nothing to wait for.
struct DeviceEvent {};
struct DeviceGraph {
  std::vector<std::function<void()>> work;
};

namespace {

// cudaMalloc's alignment.
constexpr size_t kDeviceAlignment = 256;

class EmulatedRuntime final : public DeviceRuntime {
 public:
  explicit EmulatedRuntime(uint64_t capacity) : capacity_(capacity) {}
  // Frees what its user left allocated, and the streams, events and graphs it made.
  ~EmulatedRuntime() override {
    for (auto& [address, bytes] : allocations_) std::free(reinterpret_cast<void*>(address));
    for (auto& [address, bytes] : host_allocations_) std::free(reinterpret_cast<void*>(address));
  }

  DeviceInfo info() const override {
    DeviceInfo info;
    info.name = "emulated CUDA device (host)";
    info.compute_major = 8;
    info.compute_minor = 0;
    info.total_bytes = capacity_;
    info.emulated = true;
    return info;
  }

  void bind_thread() override {}
  uint64_t free_bytes() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return capacity_ - used_;
  }

  void* allocate(size_t bytes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes > capacity_ - used_) {
      throw cuda_error(int(CudaErrorCode::MemoryAllocation), "cudaMalloc(" + std::to_string(bytes) + " bytes)",
                       "out of memory: " + std::to_string(capacity_ - used_) + " of " + std::to_string(capacity_) + " bytes free");
    }
    const size_t rounded = (bytes == 0 ? 1 : bytes + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment;
    void* pointer = std::aligned_alloc(kDeviceAlignment, rounded);
    if (pointer == nullptr) throw cuda_error(int(CudaErrorCode::MemoryAllocation), "cudaMalloc", "the host has no memory for it");
    allocations_[reinterpret_cast<uintptr_t>(pointer)] = bytes;
    used_ += bytes;
    return pointer;
  }

  void free(void* pointer) override {
    if (pointer == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = allocations_.find(reinterpret_cast<uintptr_t>(pointer));
    require(found != allocations_.end(), ErrorKind::State, "cudaFree of a pointer that is not a live device allocation");
    used_ -= found->second;
    allocations_.erase(found);
    std::free(pointer);
  }

  // Ordinary host memory, tracked so that freeing what it did not give out is caught.
  void* allocate_host(size_t bytes) override {
    void* pointer = std::malloc(bytes == 0 ? 1 : bytes);
    if (pointer == nullptr) throw cuda_error(int(CudaErrorCode::MemoryAllocation), "cudaMallocHost", "the host has no memory for it");
    std::lock_guard<std::mutex> lock(mutex_);
    host_allocations_[reinterpret_cast<uintptr_t>(pointer)] = bytes;
    return pointer;
  }
  void free_host(void* pointer) override {
    if (pointer == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = host_allocations_.find(reinterpret_cast<uintptr_t>(pointer));
    require(found != host_allocations_.end(), ErrorKind::State, "cudaFreeHost of a pointer that is not a live page-locked allocation");
    host_allocations_.erase(found);
    std::free(pointer);
  }

  void copy(void* destination, const void* source, size_t bytes, CopyKind kind, DeviceStream* stream) override {
    if (kind != CopyKind::HostToDevice) check_device_range(source, bytes, "cudaMemcpy source");
    if (kind != CopyKind::DeviceToHost) check_device_range(destination, bytes, "cudaMemcpy destination");
    // A copy of nothing is legal whatever its pointers (an empty host vector's data() is null).
    if (bytes == 0) return;
    cuda_emu::issue(emulated(stream), [destination, source, bytes] { std::memmove(destination, source, bytes); });
  }

  void fill_zero(void* destination, size_t bytes, DeviceStream* stream) override {
    check_device_range(destination, bytes, "cudaMemset destination");
    cuda_emu::issue(emulated(stream), [destination, bytes] { std::memset(destination, 0, bytes); });
  }

  DeviceStream* create_stream() override { return adopt(streams_); }
  void destroy_stream(DeviceStream* stream) override {
    require(stream == nullptr || !stream->emulated.capturing, ErrorKind::State, "cudaStreamDestroy of a stream that is capturing");
    release(streams_, stream, "cudaStreamDestroy");
  }
  void synchronize(DeviceStream* stream) override {
    require(stream == nullptr || !stream->emulated.capturing, ErrorKind::State,
            "cudaStreamSynchronize of a capturing stream (capture records work; nothing runs until the graph is launched)");
  }
  void* native_stream(DeviceStream* stream) override { return emulated(stream); }

  DeviceEvent* create_event() override { return adopt(events_); }
  void destroy_event(DeviceEvent* event) override { release(events_, event, "cudaEventDestroy"); }
  void record(DeviceEvent* event, DeviceStream* stream) override { require(event != nullptr, ErrorKind::State, "cudaEventRecord of no event"); }
  void wait(DeviceStream* stream, DeviceEvent* event) override { require(event != nullptr, ErrorKind::State, "cudaStreamWaitEvent on no event"); }
  void synchronize(DeviceEvent* event) override { require(event != nullptr, ErrorKind::State, "cudaEventSynchronize of no event"); }

  void begin_capture(DeviceStream* stream) override {
    require(stream != nullptr, ErrorKind::State, "cudaStreamBeginCapture needs a created stream, not the default one");
    require(!stream->emulated.capturing, ErrorKind::State, "cudaStreamBeginCapture on a stream already capturing");
    stream->emulated.capturing = true;
    stream->emulated.captured.clear();
  }
  DeviceGraph* end_capture(DeviceStream* stream) override {
    require(stream != nullptr && stream->emulated.capturing, ErrorKind::State, "cudaStreamEndCapture on a stream not capturing");
    stream->emulated.capturing = false;
    DeviceGraph* graph = adopt(graphs_);
    graph->work = std::move(stream->emulated.captured);
    stream->emulated.captured.clear();
    return graph;
  }
  void launch_graph(DeviceGraph* graph, DeviceStream* stream) override {
    require(graph != nullptr, ErrorKind::State, "cudaGraphLaunch of no graph");
    for (const auto& work : graph->work) cuda_emu::issue(emulated(stream), work);
  }
  void destroy_graph(DeviceGraph* graph) override { release(graphs_, graph, "cudaGraphExecDestroy"); }

 private:
  template <typename Handle>
  Handle* adopt(std::vector<std::unique_ptr<Handle>>& owned) {
    std::lock_guard<std::mutex> lock(mutex_);
    owned.push_back(std::make_unique<Handle>());
    return owned.back().get();
  }
  template <typename Handle>
  void release(std::vector<std::unique_ptr<Handle>>& owned, Handle* handle, const char* call) {
    if (handle == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = std::find_if(owned.begin(), owned.end(), [handle](const auto& entry) { return entry.get() == handle; });
    require(found != owned.end(), ErrorKind::State, std::string(call) + " of a handle this runtime did not make, or destroyed twice");
    owned.erase(found);
  }

  static cuda_emu::Stream* emulated(DeviceStream* stream) { return stream == nullptr ? nullptr : &stream->emulated; }

  void check_device_range(const void* pointer, size_t bytes, const char* what) {
    std::lock_guard<std::mutex> lock(mutex_);
    const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
    auto after = allocations_.upper_bound(address);
    const bool inside = after != allocations_.begin() && [&] {
      const auto& [start, size] = *std::prev(after);
      return address - start <= size && bytes <= size - (address - start);
    }();
    require(inside, ErrorKind::State, [&] { return std::string(what) + ": " + std::to_string(bytes) + " bytes that are not inside one device allocation"; });
  }

  std::mutex mutex_;
  uint64_t capacity_;
  uint64_t used_ = 0;
  std::map<uintptr_t, size_t> allocations_;
  std::map<uintptr_t, size_t> host_allocations_;
  std::vector<std::unique_ptr<DeviceStream>> streams_;
  std::vector<std::unique_ptr<DeviceEvent>> events_;
  std::vector<std::unique_ptr<DeviceGraph>> graphs_;
};

}  // namespace

std::unique_ptr<DeviceRuntime> make_emulated_runtime(uint64_t capacity_bytes) {
  return std::make_unique<EmulatedRuntime>(capacity_bytes);
}

}  // namespace falcon::cuda
