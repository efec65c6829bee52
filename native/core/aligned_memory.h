#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace falcon {

// Frees a block of allocate_streamed and takes its bytes off the live count (memory.h).
struct StreamedDeleter {
  size_t bytes = 0;
  void operator()(void* pointer) const;
};

// Memory that kernels stream through. Blocks of 2 MiB or more sit on 2 MiB boundaries and ask for
// transparent huge pages: streaming gigabytes through 4 KiB pages would cost a TLB miss, and on first
// touch a page fault, every 4 KiB. Smaller blocks get the cache-line alignment whole-line loads want.
// Left uninitialised; null when out of memory. Counted as owned memory while it lives.
std::unique_ptr<void, StreamedDeleter> allocate_streamed(size_t bytes);
// The bytes allocate_streamed(bytes) really takes (rounded up to its alignment); UINT64_MAX when it would overflow.
uint64_t streamed_allocation_bytes(uint64_t bytes);

}  // namespace falcon
