#include "weight_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "memory.h"

namespace falcon {

namespace {

// Rows are read in blocks of about this many bytes: large enough that reads stay sequential and
// cheap, small enough that the block costs nothing next to the weights.
constexpr uint64_t kReadBlockBytes = uint64_t(8) << 20;

}  // namespace

std::shared_ptr<WeightFile> WeightFile::open(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; a regular file ignores it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  require(fd >= 0, ErrorKind::Weights, path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat info;
  if (fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    throw Error(ErrorKind::Weights, path + ": cannot stat (" + std::strerror(error) + ")");
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    throw Error(ErrorKind::Weights, path + (S_ISDIR(info.st_mode) ? ": is a directory" : ": is not a regular file"));
  }
  return std::shared_ptr<WeightFile>(new WeightFile(path, fd, uint64_t(info.st_size)));
}

WeightFile::~WeightFile() { ::close(fd_); }

void WeightFile::read(uint64_t offset, uint64_t length, void* out, const std::string& what) const {
  char* dest = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < length) {
    const size_t request = size_t(std::min<uint64_t>(length - done, uint64_t(1) << 30));
    const ssize_t got = pread(fd_, dest + done, request, off_t(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      throw Error(ErrorKind::Weights, path_ + ": " + what + ": cannot read bytes [" + std::to_string(offset) + ", " +
                                          std::to_string(offset + length) + ") (" + std::strerror(errno) + ")");
    }
    if (got == 0) {
      struct stat info;
      const std::string now = fstat(fd_, &info) == 0 ? std::to_string(info.st_size) : std::string("unknown");
      throw Error(ErrorKind::Weights, path_ + ": " + what + " needs bytes [" + std::to_string(offset) + ", " +
                                          std::to_string(offset + length) + ") but the file ends at byte " +
                                          std::to_string(offset + done) + " (it was " + std::to_string(size_) +
                                          " bytes when opened and is " + now + " now: truncated while loading?)");
    }
    done += uint64_t(got);
  }
}

void set_weight_from_file(Model& model, const std::string& name, int64_t row_offset, TensorSource source,
                          const WeightFile& file, uint64_t byte_offset) {
  // Checked first, so the block below is sized by the weight's real width, not the request's.
  model.check_weight_target(name, row_offset, source.rows, source.cols);
  const std::string what = "weight '" + name + "'";
  const uint64_t row_bytes = uint64_t(source.cols) * dtype_size(source.dtype);
  if (source.input_major) {
    // Stored transposed, a block of rows is not contiguous: read the tensor whole, freed right after.
    TrackedVector<uint8_t> bytes(size_t(row_bytes * uint64_t(source.rows)));
    file.read(byte_offset, bytes.size(), bytes.data(), what);
    source.data = bytes.data();
    model.set_weight(name, row_offset, source);
    return;
  }
  const int64_t block_rows = int64_t(std::max<uint64_t>(1, kReadBlockBytes / row_bytes));
  TrackedVector<uint8_t> block(size_t(uint64_t(std::min(block_rows, source.rows)) * row_bytes));
  for (int64_t first = 0; first < source.rows; first += block_rows) {
    TensorSource part = source;
    part.rows = std::min(block_rows, source.rows - first);
    part.data = block.data();
    file.read(byte_offset + uint64_t(first) * row_bytes, uint64_t(part.rows) * row_bytes, block.data(), what);
    model.set_weight(name, row_offset + first, part);
  }
}

}  // namespace falcon
