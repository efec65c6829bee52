// kernels/draw_tokens.cu compiled as host C++ through the CUDA emulation (cuda_compat.h).
#include "../kernels/draw_tokens.cu"
