// The CUDA backend (cuda_backend_impl.h) over the real kernels (falcon::cuda, built by nvcc) and the
// CUDA runtime: CMake builds with CUDA only (FALCON_CUDA_REAL). Host C++: the kernel headers declare
// the real entry points without device code (FALCON_CUDA_HOST_CALLER in cuda_compat.h).
#if defined(FALCON_CUDA_REAL)
#define FALCON_CUDA_HOST_CALLER 1
#include "../cuda_backend_impl.h"

namespace falcon::cuda {

std::unique_ptr<Backend> make_real_cuda_backend(int ordinal) {
  std::unique_ptr<DeviceRuntime> runtime = make_cuda_runtime(ordinal);
  const DeviceInfo info = runtime->info();
  const std::string label = "cuda:" + std::to_string(ordinal) + " (" + info.name + ", sm_" + std::to_string(info.compute_major) +
                            std::to_string(info.compute_minor) + ", " + std::to_string(info.total_bytes >> 30) + " GiB)";
  return std::make_unique<CudaBackend>(std::move(runtime), label);
}

}  // namespace falcon::cuda
#endif
