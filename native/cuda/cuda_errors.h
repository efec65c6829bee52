#pragma once
// CUDA runtime error codes as falcon errors whose message says what to do. The numbers are the
// CUDA runtime's cudaError_t values (stable across releases; device_runtime_cuda.cu checks them
// against cuda_runtime.h), so the mapping compiles, and is tested, without the CUDA headers.
#include <string>

#include "../core/error.h"

namespace falcon::cuda {

enum class CudaErrorCode : int {
  Success = 0,
  InvalidValue = 1,
  MemoryAllocation = 2,
  InitializationError = 3,
  InsufficientDriver = 35,
  NoDevice = 100,
  InvalidDevice = 101,
  NoKernelImageForDevice = 209,
  UnsupportedPtxVersion = 222,
  StreamCaptureUnsupported = 900,
  StreamCaptureInvalidated = 901,
};

// The error for `code` returned by `call` (what the runtime said is `detail`), with its fix.
Error cuda_error(int code, const std::string& call, const std::string& detail);

}  // namespace falcon::cuda
