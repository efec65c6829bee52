// kernels/kv_write.cu compiled as host C++ through the CUDA emulation (cuda_compat.h).
#include "../kernels/kv_write.cu"
