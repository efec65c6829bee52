// cuda_test.cpp a second time, over the real kernels (falcon::cuda, built by nvcc) and the CUDA
// runtime: cudaDeviceForTest, in CMake builds with CUDA only (FALCON_CUDA_REAL). This file is host
// C++, so the kernel headers declare the real entry points without the device-side code
// (FALCON_CUDA_HOST_CALLER in cuda_compat.h).
#if defined(FALCON_CUDA_REAL)
#define FALCON_CUDA_HOST_CALLER 1
#define FALCON_CUDA_TEST_REAL 1
#include "cuda_test.cpp"
#endif
