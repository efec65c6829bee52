#include "aligned_memory.h"

#include "memory.h"
#include "platform.h"

namespace falcon {

void StreamedDeleter::operator()(void* pointer) const {
  platform::free_aligned(pointer);
  count_release(MemoryUse::Owned, bytes);
}

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
size_t streamed_alignment(uint64_t bytes) { return bytes >= kHugePage ? kHugePage : 64; }
}  // namespace

uint64_t streamed_allocation_bytes(uint64_t bytes) {
  const uint64_t alignment = streamed_alignment(bytes);
  if (bytes > SIZE_MAX - alignment) return UINT64_MAX;
  return bytes == 0 ? alignment : (bytes + alignment - 1) / alignment * alignment;
}

std::unique_ptr<void, StreamedDeleter> allocate_streamed(size_t bytes) {
  const size_t alignment = streamed_alignment(bytes);
  const uint64_t rounded = streamed_allocation_bytes(bytes);
  if (rounded == UINT64_MAX) return nullptr;
  void* block = platform::allocate_aligned(alignment, rounded);
  if (block == nullptr) return std::unique_ptr<void, StreamedDeleter>(nullptr, StreamedDeleter{0});
  count_allocation(MemoryUse::Owned, rounded);
  if (alignment == kHugePage) platform::advise_huge_pages(block, rounded);
  return std::unique_ptr<void, StreamedDeleter>(block, StreamedDeleter{rounded});
}

}  // namespace falcon
