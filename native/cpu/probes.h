#pragma once
#include <cstdint>

#include "kernels/kernels.h"

namespace falcon::cpu {

// Machine ceilings measured with the active kernels on every pool thread, for benchmark floors.
// Read bandwidth in bytes per second over a buffer of `bytes` (far larger than the caches).
double probe_read_bandwidth(int64_t bytes, int repetitions);
// Multiply-add throughput of `op`, in arithmetic operations per second.
double probe_peak_ops(PeakOp op);

}  // namespace falcon::cpu
