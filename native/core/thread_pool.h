#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace falcon {

// A persistent pool: threads are created once, never per call or per token. The caller of
// parallel_for works too, so a pool of N threads keeps N-1 workers. Calls from several threads
// (concurrent async forwards) are serialised, because each one already uses every core.
// A decoded token runs a few hundred parallel_for calls of tens of microseconds each, about what
// waking a sleeping thread costs; so between calls workers and callers poll for a while (yielding
// the core, in case threads outnumber cores) before they sleep.
class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return int(workers_.size()) + 1; }

  // Runs body(begin, end) over [0, count) in chunks of at least `grain` items, and returns when all are done.
  void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

 private:
  void worker_loop();
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;
  // Guards sleeping and waking only; the work itself is handed out through the atomics.
  std::mutex state_mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  int sleeping_workers_ = 0;
  // Written by the caller before it publishes a call by advancing generation_.
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t count_ = 0;
  int64_t chunk_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> busy_workers_{0};  // workers yet to finish the current call
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
};

// The process-wide pool, sized from FALCON_NUM_THREADS or the number of online CPUs.
ThreadPool& global_thread_pool();
// Replaces the process-wide pool; must not race with running forwards.
void set_global_thread_count(int num_threads);
int default_thread_count();

}  // namespace falcon
