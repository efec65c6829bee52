#include "aligned_memory.h"

#include <sys/mman.h>

#include "memory.h"

namespace falcon {

void StreamedDeleter::operator()(void* pointer) const {
  std::free(pointer);
  count_release(MemoryUse::Owned, bytes);
}

std::unique_ptr<void, StreamedDeleter> allocate_streamed(size_t bytes) {
  constexpr size_t kHugePage = size_t(2) << 20;
  const size_t alignment = bytes >= kHugePage ? kHugePage : 64;
  if (bytes > SIZE_MAX - alignment) return nullptr;
  const size_t rounded = bytes == 0 ? alignment : (bytes + alignment - 1) / alignment * alignment;
  void* block = std::aligned_alloc(alignment, rounded);
  if (block == nullptr) return std::unique_ptr<void, StreamedDeleter>(nullptr, StreamedDeleter{0});
  count_allocation(MemoryUse::Owned, rounded);
  if (alignment == kHugePage) madvise(block, rounded, MADV_HUGEPAGE);
  return std::unique_ptr<void, StreamedDeleter>(block, StreamedDeleter{rounded});
}

}  // namespace falcon
