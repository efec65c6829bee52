// kernels/attention.cu compiled as host C++ through the CUDA emulation (cuda_compat.h).
#include "../kernels/attention.cu"
