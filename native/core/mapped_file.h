#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace falcon {

// A read-only memory map of a whole weight file. Weights are repacked straight out of it, after
// which their pages are released, so the weights are never resident twice.
class MappedFile {
 public:
  // Throws Error(Weights) naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  const uint8_t* data() const { return static_cast<const uint8_t*>(base_); }
  // True when [offset, offset + length) lies inside the file (overflow-safe).
  bool contains(uint64_t offset, uint64_t length) const { return offset <= size_ && length <= size_ - offset; }
  // Drops the pages wholly inside the range from this process (the page cache keeps them).
  void release(uint64_t offset, uint64_t length) const;

 private:
  MappedFile(std::string path, void* base, uint64_t size) : path_(std::move(path)), base_(base), size_(size) {}

  std::string path_;
  void* base_;
  uint64_t size_;
};

}  // namespace falcon
