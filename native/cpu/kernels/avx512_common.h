#pragma once
// Helpers shared by the AVX-512 kernel files (avx512.cpp, int4_avx512.cpp). Include it only from such
// a file, inside its FALCON_X86 guard, after the file's AVX-512 target pragma: these functions take the
// target of the file that includes them. <immintrin.h> is the includer's, before that pragma, as
// avx512.cpp explains.
#include "kernels.h"

namespace falcon::cpu {
namespace {

// Dot-product accumulation in place. Written as intrinsics, GCC 12 copies (or spills) every
// accumulator of a long vpdpbusd chain each step; an asm operand tied to the register makes each
// instruction update its accumulator where it lives. The quad is one 32-bit unit from memory,
// broadcast to every lane by the instruction.
inline void dot_bytes(__m512i& accumulator, __m512i unsigned_bytes, const uint32_t& signed_quad) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(accumulator) : "v"(unsigned_bytes), "m"(signed_quad));
}

}  // namespace
}  // namespace falcon::cpu
