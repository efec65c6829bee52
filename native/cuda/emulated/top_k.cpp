// kernels/top_k.cu compiled as host C++ through the CUDA emulation (cuda_compat.h).
#include "../kernels/top_k.cu"
