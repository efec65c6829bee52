#pragma once
#include <napi.h>

namespace falcon::binding {

// Test-only: the CUDA kernels as the emulation runs them (falcon::cuda::emulated over the emulated
// DeviceRuntime), each beside the CPU operator it must match (test/cuda-ops.test.ts), and probes of
// the emulation and runtime seam themselves (test/cuda-emulation.test.ts). Every call makes its own
// emulated device, uploads its inputs, runs on a stream and downloads the results, synchronously.
// See cuda_test.cpp for each function's spec object.
Napi::Object CudaEmulationForTest(Napi::Env env);

#if defined(FALCON_CUDA_REAL)
// The same entry points (less the emulation's misuse probes) over the real kernels on GPU 0 through
// the CUDA runtime; each call throws the typed error (FALCON_CONFIG, with the fix) when no driver or
// GPU answers. CMake builds with nvcc only (cuda_test_real.cpp).
Napi::Object CudaDeviceForTest(Napi::Env env);
#endif

}  // namespace falcon::binding
