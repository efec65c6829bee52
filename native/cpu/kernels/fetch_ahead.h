#pragma once
// The software prefetch of the kernels (AVX2 and AVX-512): plain x86 instructions, the same
// under either target. Include it only from an x86 kernel file, inside its FALCON_X86 guard; the
// standard headers it uses (<immintrin.h>, <cstdint>) are the includer's, as avx2.cpp explains.
namespace falcon::cpu {
namespace {

// Asks for the cache line holding `line` (into every level). GCC and Clang get an asm statement,
// because GCC 12's dead-code elimination drops _mm_prefetch in the kernels (seen in the object code: no
// prefetch instruction at -O2).
inline void fetch_line(const char* line) {
#if defined(__GNUC__)
  asm volatile("prefetcht0 %0" : : "m"(*line));
#else
  _mm_prefetch(line, _MM_HINT_T0);
#endif
}

// Asks for Lines cache lines from kDecodeFetchBytes past `step`. A lone decode row streams its weight
// panels from memory; with the hardware prefetcher alone two threads read about 45 GB/s where the read
// probe reached 70. Asking for every line 4 KiB ahead of the step that reads it took AVX2 float16
// decode from 15.6–18.3 to 19.0–21.0 tok/s on falcon-rw-1b's shape (2 threads; 1 and 8 KiB gained
// less; AVX-512's figures are beside its two-panel kernels). The lines past a panel's end are the next
// panel's start, or memory no one reads: a prefetch never faults.
constexpr int64_t kDecodeFetchBytes = 4096;
template <int Lines>
inline void fetch_stream_ahead(const void* step) {
  const char* line = static_cast<const char*>(step) + kDecodeFetchBytes;
  for (int i = 0; i < Lines; ++i) fetch_line(line + 64 * i);
}

// Asks for every cache line of [start, start + bytes). A lone decode row's int4 kernels ask for a panel
// pair's biases before its micro-kernel runs: a token's weights stream through the caches and push the
// biases out, and the tile stores' bias loads missed to memory (3 % of a single-row int4 decode's samples
// sat on the bias add; 1.5 % with this, which covers the stores' whole epilogue).
inline void fetch_lines(const void* start, int64_t bytes) {
  const char* first = static_cast<const char*>(start);
  const char* last = first + bytes - 1;
  for (const char* line = first; line < last; line += 64) fetch_line(line);
  fetch_line(last);
}

}  // namespace
}  // namespace falcon::cpu
