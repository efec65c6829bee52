#include "cuda_errors.h"

namespace falcon::cuda {

Error cuda_error(int code, const std::string& call, const std::string& detail) {
  const std::string what = call + " failed (CUDA error " + std::to_string(code) + ": " + detail + ")";
  switch (CudaErrorCode(code)) {
    case CudaErrorCode::MemoryAllocation:
      return Error(ErrorKind::State, what + ": the GPU is out of memory; free other GPU processes, use a smaller model or "
                                            "dtype (bfloat16, int8), or lower the engine's KV blocks and batch size");
    case CudaErrorCode::NoDevice:
      return Error(ErrorKind::Config, what + ": no CUDA GPU is visible; check nvidia-smi and CUDA_VISIBLE_DEVICES, or load "
                                             "with device: \"cpu\"");
    case CudaErrorCode::InvalidDevice:
      return Error(ErrorKind::Config, what + ": no such GPU; device \"cuda:N\" must name one nvidia-smi lists (from 0)");
    case CudaErrorCode::InsufficientDriver:
      return Error(ErrorKind::Config, what + ": the NVIDIA driver is missing, or older than this build's CUDA runtime; "
                                             "install or update the driver, or load with device: \"cpu\"");
    case CudaErrorCode::NoKernelImageForDevice:
    case CudaErrorCode::UnsupportedPtxVersion:
      return Error(ErrorKind::Config, what + ": this build has no code this GPU or driver can run (built for sm_80, sm_86, "
                                             "sm_89, sm_90 and PTX); update the driver or rebuild for this GPU");
    case CudaErrorCode::InitializationError:
      return Error(ErrorKind::Config, what + ": the CUDA driver could not start; check that the driver is installed and "
                                             "loaded (nvidia-smi)");
    default:
      return Error(ErrorKind::State, what);
  }
}

}  // namespace falcon::cuda
