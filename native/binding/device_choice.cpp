#include "device_choice.h"

#include <cstdlib>

#include "../core/error.h"
#include "../cuda/cuda_backend.h"

namespace falcon::binding {

namespace {

bool emulation_requested() {
  const char* value = std::getenv("FALCON_CUDA_EMULATE");
  return value != nullptr && std::string(value) == "1";
}

// "cuda" → 0, "cuda:N" → N; -1 for anything else.
int cuda_ordinal(const std::string& device) {
  if (device == "cuda") return 0;
  if (device.rfind("cuda:", 0) != 0 || device.size() == 5 || device.size() > 8) return -1;
  int ordinal = 0;
  for (size_t i = 5; i < device.size(); ++i) {
    if (device[i] < '0' || device[i] > '9') return -1;
    ordinal = ordinal * 10 + (device[i] - '0');
  }
  return ordinal;
}

}  // namespace

bool cuda_kernels_built() {
#if defined(FALCON_CUDA_REAL)
  return true;
#else
  return false;
#endif
}

std::string auto_backend_name() {
  ModelConfig float_model;
  float_model.dtype = DType::Float32;
  return backend_for_device("auto", float_model)->name();
}

std::shared_ptr<Backend> backend_for_device(const std::string& device, const ModelConfig& config) {
  if (device == "cpu") return make_cpu_backend();
  if (device == "auto") {
#if defined(FALCON_CUDA_REAL)
    if (config.dtype != DType::Int4) {
      try {
        return cuda::make_real_cuda_backend(0);
      } catch (const Error&) {
        // No usable GPU (no driver, no device, an architecture without kernels): the CPU runs it.
      }
    }
#endif
    return make_cpu_backend();
  }
  const int ordinal = cuda_ordinal(device);
  require(ordinal >= 0, ErrorKind::Input, "device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got \"" + device + "\"");
  cuda::require_cuda_supported(config);
  if (emulation_requested()) {
    require(ordinal == 0, ErrorKind::Config, "FALCON_CUDA_EMULATE=1 emulates one device, cuda:0; there is no " + device);
    return cuda::make_emulated_cuda_backend();
  }
#if defined(FALCON_CUDA_REAL)
  return cuda::make_real_cuda_backend(ordinal);
#else
  throw Error(ErrorKind::Config,
              "device \"" + device + "\": this falcon-native binary has no CUDA kernels. Install the CUDA build "
              "(@falcon-native/linux-x64-cuda) or build one with `npm run build:cmake` where nvcc (CUDA 11.8 or later) is "
              "installed; set FALCON_CUDA_EMULATE=1 to run the CUDA backend on the host emulation (slow; for tests)");
#endif
}

}  // namespace falcon::binding
