#include "weight_file.h"

#include <algorithm>

#include "error.h"
#include "memory.h"

namespace falcon {

namespace {

// Rows are read in blocks of about this many bytes: large enough that reads stay sequential and
// cheap, small enough that the block costs nothing next to the weights.
constexpr uint64_t kReadBlockBytes = uint64_t(8) << 20;

}  // namespace

std::shared_ptr<WeightFile> WeightFile::open(const std::string& path) {
  std::string problem;
  std::unique_ptr<platform::ReadOnlyFile> file = platform::ReadOnlyFile::open(path, &problem);
  require(file != nullptr, ErrorKind::Weights, path + ": " + problem);
  return std::shared_ptr<WeightFile>(new WeightFile(path, std::move(file)));
}

void WeightFile::read(uint64_t offset, uint64_t length, void* out, const std::string& what) const {
  char* dest = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < length) {
    const size_t request = size_t(std::min<uint64_t>(length - done, uint64_t(1) << 30));
    std::string problem;
    const int64_t got = file_->read_at(offset + done, dest + done, request, &problem);
    if (got < 0) {
      throw Error(ErrorKind::Weights, path_ + ": " + what + ": cannot read bytes [" + std::to_string(offset) + ", " +
                                          std::to_string(offset + length) + ") (" + problem + ")");
    }
    if (got == 0) {
      const int64_t size_now = file_->current_size();
      const std::string now = size_now >= 0 ? std::to_string(size_now) : std::string("unknown");
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
