// kernels/rotary.cu compiled as host C++ through the CUDA emulation (cuda_compat.h), into
// falcon::cuda::emulated: what the addon and the tests run without a GPU.
#include "../kernels/rotary.cu"
