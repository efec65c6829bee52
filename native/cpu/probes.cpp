#include "probes.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>

#include "../core/aligned_memory.h"
#include "../core/thread_pool.h"
#include "kernels/kernels.h"

namespace falcon::cpu {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

double probe_read_bandwidth(int64_t bytes, int repetitions) {
  const int64_t count = bytes / int64_t(sizeof(float));
  // Allocated like weight matrices, so the probe reads memory the way the kernels do.
  const std::unique_ptr<void, StreamedDeleter> block = allocate_streamed(size_t(bytes));
  if (!block) return 0.0;
  float* const buffer = static_cast<float*>(block.get());
  const std::shared_ptr<ThreadPool> pool_holder = current_thread_pool();
  ThreadPool& pool = *pool_holder;
  const int64_t threads = pool.num_threads();
  // Each thread writes (and so owns) the part it later reads.
  pool.parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) std::fill(buffer + t * count / threads, buffer + (t + 1) * count / threads, 1.0f);
  });
  const KernelTable& table = kernels();
  double best = 0.0;
  std::atomic<float> sink{0.0f};
  for (int r = 0; r < repetitions; ++r) {
    const auto start = std::chrono::steady_clock::now();
    pool.parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        sink.store(table.stream_sum(buffer + t * count / threads, count / threads), std::memory_order_relaxed);
      }
    });
    best = std::max(best, double(bytes) / seconds_since(start));
  }
  return best;
}

double probe_peak_ops(PeakOp op) {
  const std::shared_ptr<ThreadPool> pool_holder = current_thread_pool();
  ThreadPool& pool = *pool_holder;
  const int64_t threads = pool.num_threads();
  const KernelTable& table = kernels();
  constexpr int64_t kIterations = 20'000'000;
  std::atomic<double> ops{0.0};
  const auto start = std::chrono::steady_clock::now();
  pool.parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const double done = table.peak_ops(kIterations, op);
      double current = ops.load();
      while (!ops.compare_exchange_weak(current, current + done)) {}
    }
  });
  return ops.load() / seconds_since(start);
}

}  // namespace falcon::cpu
