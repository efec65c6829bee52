#include "memory.h"

#include <atomic>
#include <fstream>
#include <algorithm>

namespace falcon {

namespace {

struct Counters {
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> allocations{0};
};

Counters& counters(MemoryUse use) {
  static Counters owned, scratch;
  return use == MemoryUse::Owned ? owned : scratch;
}

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

MemoryStats memory_stats() {
  MemoryStats stats;
  stats.live_bytes = counters(MemoryUse::Owned).bytes.load();
  stats.live_allocations = counters(MemoryUse::Owned).allocations.load();
  stats.thread_scratch_bytes = counters(MemoryUse::ThreadScratch).bytes.load();
  stats.thread_scratch_allocations = counters(MemoryUse::ThreadScratch).allocations.load();
  return stats;
}

void count_allocation(MemoryUse use, size_t bytes) {
  Counters& c = counters(use);
  c.bytes.fetch_add(bytes, std::memory_order_relaxed);
  c.allocations.fetch_add(1, std::memory_order_relaxed);
}

void count_release(MemoryUse use, size_t bytes) {
  Counters& c = counters(use);
  c.bytes.fetch_sub(bytes, std::memory_order_relaxed);
  c.allocations.fetch_sub(1, std::memory_order_relaxed);
}

uint64_t available_memory_bytes() { return std::min(meminfo_available(), cgroup_headroom()); }

void require_memory(ByteCount bytes, ErrorKind kind, const std::string& what) {
  const uint64_t available = available_memory_bytes();
  if (bytes.value() <= available) return;
  throw Error(kind, what + " needs " + std::to_string(bytes.value()) + " bytes but only " + std::to_string(available) +
                        " bytes of memory are available");
}

}  // namespace falcon
