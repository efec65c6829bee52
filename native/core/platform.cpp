#include "platform.h"

#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <malloc.h>
#else
#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#if defined(__linux__)
#include <algorithm>
#include <fstream>
#elif defined(__APPLE__)
#include <mach/mach.h>
#endif

namespace falcon::platform {

// ---- Available memory ----

#if defined(__linux__)

namespace {

// The first whitespace-separated number in `path`, or false when it is absent or not a number ("max").
bool read_number(const std::string& path, uint64_t* out) {
  std::ifstream file(path);
  std::string text;
  if (!(file >> text) || text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return false;
  *out = std::stoull(text);
  return true;
}

uint64_t meminfo_available() {
  std::ifstream file("/proc/meminfo");
  std::string key, unit;
  uint64_t kilobytes = 0;
  while (file >> key >> kilobytes) {
    std::getline(file, unit);
    if (key == "MemAvailable:") return kilobytes * 1024;
  }
  return std::numeric_limits<uint64_t>::max();
}

// Limit − usage of a cgroup directory holding `limit_name` and `usage_name`; false when it has no limit.
bool cgroup_headroom_at(const std::string& directory, const char* limit_name, const char* usage_name, uint64_t* out) {
  uint64_t limit = 0, usage = 0;
  if (!read_number(directory + "/" + limit_name, &limit) || !read_number(directory + "/" + usage_name, &usage)) return false;
  *out = limit > usage ? limit - usage : 0;
  return true;
}

// The headroom of this process's memory cgroup (v2, else v1), or UINT64_MAX without a limit.
uint64_t cgroup_headroom() {
  std::ifstream self("/proc/self/cgroup");
  std::string line;
  uint64_t headroom = std::numeric_limits<uint64_t>::max();
  while (std::getline(self, line)) {
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const bool v2 = controllers.empty();
    if (!v2 && controllers.find("memory") == std::string::npos) continue;
    const std::string root = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
    const char* limit_name = v2 ? "memory.max" : "memory.limit_in_bytes";
    const char* usage_name = v2 ? "memory.current" : "memory.usage_in_bytes";
    uint64_t found = 0;
    // Inside a cgroup namespace the process's own group is the root of the hierarchy.
    if (cgroup_headroom_at(root + line.substr(second + 1), limit_name, usage_name, &found) ||
        cgroup_headroom_at(root, limit_name, usage_name, &found)) {
      headroom = std::min(headroom, found);
    }
  }
  return headroom;
}

}  // namespace

uint64_t available_memory_bytes() { return std::min(meminfo_available(), cgroup_headroom()); }

#elif defined(__APPLE__)

uint64_t available_memory_bytes() {
  const mach_port_t host = mach_host_self();
  vm_size_t page_bytes = 0;
  vm_statistics64_data_t pages;
  mach_msg_type_number_t count = HOST_VM_INFO64_COUNT;
  const bool known = host_page_size(host, &page_bytes) == KERN_SUCCESS &&
                     host_statistics64(host, HOST_VM_INFO64, reinterpret_cast<host_info64_t>(&pages), &count) == KERN_SUCCESS;
  mach_port_deallocate(mach_task_self(), host);
  if (!known) return std::numeric_limits<uint64_t>::max();
  // Free pages and the inactive ones the kernel reclaims before it compresses or swaps.
  return (uint64_t(pages.free_count) + uint64_t(pages.inactive_count)) * uint64_t(page_bytes);
}

#elif defined(_WIN32)

uint64_t available_memory_bytes() {
  MEMORYSTATUSEX status;
  status.dwLength = sizeof status;
  return GlobalMemoryStatusEx(&status) ? uint64_t(status.ullAvailPhys) : std::numeric_limits<uint64_t>::max();
}

#else

uint64_t available_memory_bytes() { return std::numeric_limits<uint64_t>::max(); }

#endif

#if defined(_WIN32)

// ---- Windows: processors, aligned memory, files ----

namespace {

// The system's text for a GetLastError() code, without its trailing period and line break.
std::string system_message(DWORD error) {
  char* text = nullptr;
  const DWORD length =
      FormatMessageA(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr,
                     error, 0, reinterpret_cast<char*>(&text), 0, nullptr);
  std::string message = length > 0 ? std::string(text, length) : "error " + std::to_string(error);
  LocalFree(text);
  while (!message.empty() && std::strchr(".\r\n ", message.back()) != nullptr) message.pop_back();
  return message;
}

// `utf8` as UTF-16 for the wide Windows API; false when it is not valid UTF-8.
bool widen(const std::string& utf8, std::wstring* out) {
  if (utf8.empty() || utf8.size() > size_t(std::numeric_limits<int>::max())) return false;
  const int length = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), int(utf8.size()), nullptr, 0);
  if (length <= 0) return false;
  out->assign(size_t(length), L'\0');
  return MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), int(utf8.size()), &(*out)[0], length) == length;
}

HANDLE as_handle(intptr_t handle) { return reinterpret_cast<HANDLE>(handle); }

}  // namespace

int online_cpu_count() {
  // Every processor group: GetSystemInfo would count only this process's group (at most 64).
  const DWORD online = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
  return online > 0 ? int(online) : 1;
}

void* allocate_aligned(size_t alignment, size_t bytes) { return _aligned_malloc(bytes, alignment); }
void free_aligned(void* block) { _aligned_free(block); }
// Windows' large pages need a privilege ordinary users lack, and are never transparent.
void advise_huge_pages(void*, size_t) {}

std::unique_ptr<ReadOnlyFile> ReadOnlyFile::open(const std::string& path, std::string* problem) {
  std::wstring wide;
  if (!widen(path, &wide)) {
    *problem = "cannot open (not a valid UTF-8 path)";
    return nullptr;
  }
  // FILE_FLAG_BACKUP_SEMANTICS opens a directory too, so that it is reported as one. Sharing every
  // access lets other processes rewrite, rename or delete the file meanwhile, as POSIX does.
  HANDLE file = CreateFileW(wide.c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                            OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL | FILE_FLAG_BACKUP_SEMANTICS, nullptr);
  if (file == INVALID_HANDLE_VALUE) {
    *problem = "cannot open (" + system_message(GetLastError()) + ")";
    return nullptr;
  }
  BY_HANDLE_FILE_INFORMATION info;
  if (!GetFileInformationByHandle(file, &info)) {
    *problem = "cannot stat (" + system_message(GetLastError()) + ")";
    CloseHandle(file);
    return nullptr;
  }
  if (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) {
    *problem = "is a directory";
  } else if (GetFileType(file) != FILE_TYPE_DISK) {
    *problem = "is not a regular file";  // a pipe, a console or another device
  } else {
    const uint64_t size = (uint64_t(info.nFileSizeHigh) << 32) | info.nFileSizeLow;
    return std::unique_ptr<ReadOnlyFile>(new ReadOnlyFile(reinterpret_cast<intptr_t>(file), size));
  }
  CloseHandle(file);
  return nullptr;
}

ReadOnlyFile::~ReadOnlyFile() { CloseHandle(as_handle(handle_)); }

int64_t ReadOnlyFile::read_at(uint64_t offset, void* out, size_t length, std::string* problem) const {
  // On a handle opened for synchronous I/O, an OVERLAPPED only carries the offset: the call returns
  // when the read is done.
  OVERLAPPED at = {};
  at.Offset = DWORD(offset & 0xffffffffu);
  at.OffsetHigh = DWORD(offset >> 32);
  DWORD got = 0;
  if (ReadFile(as_handle(handle_), out, DWORD(length), &got, &at)) return int64_t(got);
  const DWORD error = GetLastError();
  if (error == ERROR_HANDLE_EOF) return 0;
  *problem = system_message(error);
  return -1;
}

int64_t ReadOnlyFile::current_size() const {
  LARGE_INTEGER size;
  return GetFileSizeEx(as_handle(handle_), &size) ? int64_t(size.QuadPart) : -1;
}

#else

// ---- POSIX (Linux, macOS): processors, aligned memory, files ----

int online_cpu_count() {
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? int(online) : 1;
}

void* allocate_aligned(size_t alignment, size_t bytes) {
  void* block = nullptr;
  return posix_memalign(&block, alignment, bytes) == 0 ? block : nullptr;
}

void free_aligned(void* block) { std::free(block); }

void advise_huge_pages(void* block, size_t bytes) {
#if defined(MADV_HUGEPAGE)
  madvise(block, bytes, MADV_HUGEPAGE);
#endif
}

std::unique_ptr<ReadOnlyFile> ReadOnlyFile::open(const std::string& path, std::string* problem) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; a regular file ignores it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    *problem = std::string("cannot open (") + std::strerror(errno) + ")";
    return nullptr;
  }
  struct stat info;
  if (fstat(fd, &info) != 0) {
    *problem = std::string("cannot stat (") + std::strerror(errno) + ")";
  } else if (S_ISDIR(info.st_mode)) {
    *problem = "is a directory";
  } else if (!S_ISREG(info.st_mode)) {
    *problem = "is not a regular file";
  } else {
    return std::unique_ptr<ReadOnlyFile>(new ReadOnlyFile(fd, uint64_t(info.st_size)));
  }
  ::close(fd);
  return nullptr;
}

ReadOnlyFile::~ReadOnlyFile() { ::close(int(handle_)); }

int64_t ReadOnlyFile::read_at(uint64_t offset, void* out, size_t length, std::string* problem) const {
  for (;;) {
    const ssize_t got = pread(int(handle_), out, length, off_t(offset));
    if (got >= 0) return int64_t(got);
    if (errno != EINTR) {
      *problem = std::strerror(errno);
      return -1;
    }
  }
}

int64_t ReadOnlyFile::current_size() const {
  struct stat info;
  return fstat(int(handle_), &info) == 0 ? int64_t(info.st_size) : -1;
}

#endif

}  // namespace falcon::platform
