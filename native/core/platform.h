#pragma once
// What the core needs from the operating system, in one place: platform.cpp implements it for Linux,
// macOS (and other POSIX systems) and Windows. Everything else in native/ is standard C++17.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace falcon::platform {

// Processors online, at least 1.
int online_cpu_count();

// Physical memory this process can still take: on Linux MemAvailable, capped by the memory cgroup's
// limit less its usage; UINT64_MAX where the system does not say.
uint64_t available_memory_bytes();

// `bytes` (a multiple of `alignment`, a power of two ≥ sizeof(void*)) on an `alignment` boundary,
// uninitialised; null when out of memory. Freed with free_aligned.
void* allocate_aligned(size_t alignment, size_t bytes);
void free_aligned(void* block);
// Asks for transparent huge pages over a block of allocate_aligned (Linux); a hint, a no-op elsewhere.
void advise_huge_pages(void* block, size_t bytes);

// A regular file opened for reading at offsets. Reads share no file position, so threads may read at once.
class ReadOnlyFile {
 public:
  // Null with *problem saying why ("cannot open (<system message>)", "is a directory", "is not a
  // regular file") when `path` (UTF-8) cannot be opened as a regular file. Never waits for a writer
  // (a FIFO is refused, not opened).
  static std::unique_ptr<ReadOnlyFile> open(const std::string& path, std::string* problem);
  ~ReadOnlyFile();
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  // The size when it was opened.
  uint64_t size() const { return size_; }
  // Reads up to `length` bytes (at most 1 GiB) at `offset` into `out`: the count read, 0 at the end of
  // the file, or -1 with *problem set to the system's message. Retries interrupted reads.
  int64_t read_at(uint64_t offset, void* out, size_t length, std::string* problem) const;
  // The size now, or -1 when it cannot be read.
  int64_t current_size() const;

 private:
  ReadOnlyFile(intptr_t handle, uint64_t size) : handle_(handle), size_(size) {}

  intptr_t handle_;  // a file descriptor, or a Windows HANDLE
  uint64_t size_;
};

}  // namespace falcon::platform
