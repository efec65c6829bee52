#pragma once
// The CUDA backend (core/backend.h) over the kernels of native/cuda/kernels: one implementation
// (cuda_backend_impl.h), built twice: over the host emulation of the kernels and runtime (every build;
// what the tests run here) and over the real kernels and the CUDA runtime (CMake builds with nvcc).
#include <memory>

#include "../core/backend.h"
#include "../core/model_config.h"

namespace falcon::cuda {

// Throws Error(Config) naming what the CUDA backend cannot run (int4 weights are CPU-only).
void require_cuda_supported(const ModelConfig& config);

// The backend on the emulated device: host memory stands for device memory (up to half of what the
// machine has free) and the kernels run as host code.
std::unique_ptr<Backend> make_emulated_cuda_backend();

#if defined(FALCON_CUDA_REAL)
// The backend on GPU `ordinal`; throws Error(Config) with the fix when there is no usable GPU.
std::unique_ptr<Backend> make_real_cuda_backend(int ordinal);
#endif

}  // namespace falcon::cuda
