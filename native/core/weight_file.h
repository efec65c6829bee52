#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "model.h"
#include "platform.h"

namespace falcon {

// A weight file opened for reading. Weights are read at offsets (pread), in bounded chunks, straight into
// the model's repacked layout: never mapped (a file that shrinks while it loads, truncated or
// rewritten by another process, is then a short read and an error, not a SIGBUS), and never
// resident twice.
class WeightFile {
 public:
  // Throws Error(Weights) naming the path when it cannot be opened or is not a regular file.
  static std::shared_ptr<WeightFile> open(const std::string& path);
  WeightFile(const WeightFile&) = delete;
  WeightFile& operator=(const WeightFile&) = delete;

  const std::string& path() const { return path_; }
  // The size when it was opened.
  uint64_t size() const { return size_; }
  // True when [offset, offset + length) lies inside the file (overflow-safe).
  bool contains(uint64_t offset, uint64_t length) const { return offset <= size_ && length <= size_ - offset; }
  // Reads exactly `length` bytes at `offset`; throws Error(Weights) naming the file and `what` when
  // the file ends first or cannot be read.
  void read(uint64_t offset, uint64_t length, void* out, const std::string& what) const;

 private:
  WeightFile(std::string path, std::unique_ptr<platform::ReadOnlyFile> file)
      : path_(std::move(path)), file_(std::move(file)), size_(file_->size()) {}

  std::string path_;
  std::unique_ptr<platform::ReadOnlyFile> file_;
  uint64_t size_;
};

// Model::set_weight with the source's `rows × cols` values read from `file` at `byte_offset`
// (source.data is ignored), a bounded block of rows at a time.
void set_weight_from_file(Model& model, const std::string& name, int64_t row_offset, TensorSource source,
                          const WeightFile& file, uint64_t byte_offset);

}  // namespace falcon
