#pragma once
#include <cstdint>

namespace falcon::cpu {

// Machine ceilings measured with the active kernels on every pool thread, for benchmark floors.
// Read bandwidth in bytes per second over a buffer of `bytes` (far larger than the caches).
double probe_read_bandwidth(int64_t bytes, int repetitions);
// Multiply-add throughput in flops per second (bf16: pair dot products where the ISA has them).
double probe_peak_flops(bool bf16);

}  // namespace falcon::cpu
