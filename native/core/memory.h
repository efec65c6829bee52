#pragma once
// Memory accounting and admission: every large allocation of the core is counted (so tests and
// callers can see what is live), and every size that comes from a request or a file is priced,
// with overflow-checked arithmetic, and refused before anything is allocated.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "error.h"

namespace falcon {

// Owned: held by a model, cache, call or result; returns to zero once they are gone.
// ThreadScratch: per-thread buffers hot paths keep between calls (bounded by kKeptScratchBytes).
enum class MemoryUse { Owned, ThreadScratch };

struct MemoryStats {
  uint64_t live_bytes = 0;
  uint64_t live_allocations = 0;
  uint64_t thread_scratch_bytes = 0;
  uint64_t thread_scratch_allocations = 0;
};

MemoryStats memory_stats();
void count_allocation(MemoryUse use, size_t bytes);
void count_release(MemoryUse use, size_t bytes);

// A std::allocator that counts what it holds under its MemoryUse.
template <typename T>
class TrackedAllocator {
 public:
  using value_type = T;
  TrackedAllocator() = default;
  explicit TrackedAllocator(MemoryUse use) : use_(use) {}
  template <typename U>
  TrackedAllocator(const TrackedAllocator<U>& other) : use_(other.use()) {}

  T* allocate(size_t count) {
    if (count > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_alloc();
    T* pointer = static_cast<T*>(::operator new(count * sizeof(T)));
    count_allocation(use_, count * sizeof(T));
    return pointer;
  }
  void deallocate(T* pointer, size_t count) {
    count_release(use_, count * sizeof(T));
    ::operator delete(pointer);
  }
  MemoryUse use() const { return use_; }
  template <typename U>
  bool operator==(const TrackedAllocator<U>& other) const { return use_ == other.use(); }
  template <typename U>
  bool operator!=(const TrackedAllocator<U>& other) const { return use_ != other.use(); }

 private:
  MemoryUse use_ = MemoryUse::Owned;
};

template <typename T>
using TrackedVector = std::vector<T, TrackedAllocator<T>>;

// A hot path's per-thread buffer: reused between calls so decoding allocates nothing per token, but
// one grown past this by a long prompt or a wide load is released after use, not kept per thread.
constexpr size_t kKeptScratchBytes = size_t(1) << 20;

template <typename T>
TrackedVector<T> thread_scratch() {
  return TrackedVector<T>(TrackedAllocator<T>(MemoryUse::ThreadScratch));
}

template <typename T>
void release_if_large(TrackedVector<T>& scratch) {
  if (scratch.capacity() * sizeof(T) > kKeptScratchBytes) TrackedVector<T>(scratch.get_allocator()).swap(scratch);
}

// Byte counts that saturate at UINT64_MAX instead of wrapping, so an absurd size stays absurd.
class ByteCount {
 public:
  ByteCount(uint64_t value = 0) : value_(value) {}
  uint64_t value() const { return value_; }
  // Plain comparisons rather than __builtin_*_overflow, which MSVC lacks.
  ByteCount operator+(ByteCount other) const {
    return other.value_ > kSaturated - value_ ? ByteCount(kSaturated) : ByteCount(value_ + other.value_);
  }
  ByteCount operator*(ByteCount other) const {
    return value_ != 0 && other.value_ > kSaturated / value_ ? ByteCount(kSaturated) : ByteCount(value_ * other.value_);
  }
  ByteCount& operator+=(ByteCount other) { return *this = *this + other; }

 private:
  static constexpr uint64_t kSaturated = std::numeric_limits<uint64_t>::max();
  uint64_t value_;
};

// Memory this process can still take (platform::available_memory_bytes: on Linux MemAvailable, capped
// by the cgroup's limit less its usage).
uint64_t available_memory_bytes();

// Throws Error(kind) "<what> needs N bytes but only M bytes of memory are available" when it would not fit.
void require_memory(ByteCount bytes, ErrorKind kind, const std::string& what);

}  // namespace falcon
