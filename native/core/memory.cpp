#include "memory.h"

#include <atomic>

#include "platform.h"

namespace falcon {

namespace {

struct Counters {
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> allocations{0};
};

Counters& counters(MemoryUse use) {
  static Counters owned, scratch;
  return use == MemoryUse::Owned ? owned : scratch;
}

}  // namespace

MemoryStats memory_stats() {
  MemoryStats stats;
  stats.live_bytes = counters(MemoryUse::Owned).bytes.load();
  stats.live_allocations = counters(MemoryUse::Owned).allocations.load();
  stats.thread_scratch_bytes = counters(MemoryUse::ThreadScratch).bytes.load();
  stats.thread_scratch_allocations = counters(MemoryUse::ThreadScratch).allocations.load();
  return stats;
}

void count_allocation(MemoryUse use, size_t bytes) {
  Counters& c = counters(use);
  c.bytes.fetch_add(bytes, std::memory_order_relaxed);
  c.allocations.fetch_add(1, std::memory_order_relaxed);
}

void count_release(MemoryUse use, size_t bytes) {
  Counters& c = counters(use);
  c.bytes.fetch_sub(bytes, std::memory_order_relaxed);
  c.allocations.fetch_sub(1, std::memory_order_relaxed);
}

uint64_t available_memory_bytes() { return platform::available_memory_bytes(); }

void require_memory(ByteCount bytes, ErrorKind kind, const std::string& what) {
  const uint64_t available = available_memory_bytes();
  if (bytes.value() <= available) return;
  throw Error(kind, what + " needs " + std::to_string(bytes.value()) + " bytes but only " + std::to_string(available) +
                        " bytes of memory are available");
}

}  // namespace falcon
