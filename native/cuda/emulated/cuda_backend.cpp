// The CUDA backend (cuda_backend_impl.h) over the emulated kernels and runtime, in every build: what
// device "cuda" runs on with FALCON_CUDA_EMULATE=1, and what the cuda-*.test.ts suites drive here.
#include "../cuda_backend_impl.h"

#include "../../core/memory.h"

namespace falcon::cuda {

void require_cuda_supported(const ModelConfig& config) {
  require(config.dtype != DType::Int4, ErrorKind::Config,
          "int4 weights run on the CPU backend only; load the model as int8, bfloat16 or float16 for device \"cuda\", or on device \"cpu\"");
}

std::unique_ptr<Backend> make_emulated_cuda_backend() {
  // Emulated device memory is host memory: half of what is free leaves the host room for the rest.
  return std::make_unique<emulated::CudaBackend>(make_emulated_runtime(available_memory_bytes() / 2), "cuda:0 (emulated on the host)");
}

}  // namespace falcon::cuda
