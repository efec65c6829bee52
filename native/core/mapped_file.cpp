#include "mapped_file.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

namespace falcon {

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  require(fd >= 0, ErrorKind::Weights, path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat info;
  if (fstat(fd, &info) != 0) {
    int error = errno;
    ::close(fd);
    throw Error(ErrorKind::Weights, path + ": cannot stat (" + std::strerror(error) + ")");
  }
  uint64_t size = uint64_t(info.st_size);
  void* base = nullptr;
  if (size > 0) {
    base = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
      int error = errno;
      ::close(fd);
      throw Error(ErrorKind::Weights, path + ": cannot map (" + std::strerror(error) + ")");
    }
  }
  ::close(fd);  // the mapping keeps the file alive
  return std::shared_ptr<MappedFile>(new MappedFile(path, base, size));
}

MappedFile::~MappedFile() {
  if (base_ != nullptr) munmap(base_, size_);
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (base_ == nullptr || !contains(offset, length)) return;
  const uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
  const uint64_t first = (offset + page - 1) / page * page;
  const uint64_t end = (offset + length) / page * page;
  if (end > first) madvise(static_cast<uint8_t*>(base_) + first, end - first, MADV_DONTNEED);
}

}  // namespace falcon
