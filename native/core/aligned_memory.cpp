#include "aligned_memory.h"

#include <sys/mman.h>

namespace falcon {

std::unique_ptr<void, FreeDeleter> allocate_streamed(size_t bytes) {
  constexpr size_t kHugePage = size_t(2) << 20;
  const size_t alignment = bytes >= kHugePage ? kHugePage : 64;
  const size_t rounded = bytes == 0 ? alignment : (bytes + alignment - 1) / alignment * alignment;
  std::unique_ptr<void, FreeDeleter> block(std::aligned_alloc(alignment, rounded));
  if (block && alignment == kHugePage) madvise(block.get(), rounded, MADV_HUGEPAGE);
  return block;
}

}  // namespace falcon
