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
// instruction update its accumulator where it lives.
inline void dot_bytes(__m512i& accumulator, __m512i unsigned_bytes, __m512i signed_quads) {
  asm("vpdpbusd %2, %1, %0" : "+v"(accumulator) : "v"(unsigned_bytes), "v"(signed_quads));
}

// A row's int8 quad in every lane, for dot_bytes. Broadcast into a register once and used by both of
// a step's dot products: with vpdpbusd's own broadcast from memory ({1to16}) in each, the 8-row int8
// prefill tile ran at 1204–1214 GOP/s (6144×2048) and 1270–1283 (2048×8192); with this, at 1333–1348
// and 1443–1448 (Zen 5, 512 rows, 2 threads, the two builds alternated; the probe's peak is 1767).
// Where a few rows stream their weights from memory (batched decode), the memory form read 4–8 % more
// at 2 and 8 rows and the same at 4 (two rounds in one process), a smaller effect than this one.
inline __m512i broadcast_quad(uint32_t quad) { return _mm512_set1_epi32(int(quad)); }

}  // namespace
}  // namespace falcon::cpu
