#pragma once
// The `device` option of a model: which backend it runs on.
#include <memory>
#include <string>

#include "../core/backend.h"
#include "../core/model_config.h"

namespace falcon::binding {

// "cpu"; "cuda" or "cuda:N" (GPU N; with FALCON_CUDA_EMULATE=1, the host emulation as cuda:0); "auto":
// GPU 0 when this build has CUDA kernels, a GPU answers and the model's dtype runs there, else the CPU.
// Throws Error(Input) for another string and Error(Config), saying what to do, when CUDA is asked
// for and cannot be had.
std::shared_ptr<Backend> backend_for_device(const std::string& device, const ModelConfig& config);

// Whether this binary has the real CUDA kernels (a CMake build with nvcc).
bool cuda_kernels_built();

// The backend device "auto" picks for a float model: "cuda" or "cpu".
std::string auto_backend_name();

}  // namespace falcon::binding
