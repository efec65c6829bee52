#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
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
  // Starts up to num_threads − 1 workers, stopping at the first the system refuses (a thread limit):
  // num_threads() is what really runs, start_failure() says why it is fewer.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return int(workers_.size()) + 1; }
  const std::string& start_failure() const { return start_failure_; }

  // Runs body(begin, end) over [0, count) in chunks of at least `grain` items, and returns when all are done.
  void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

 private:
  void worker_loop();
  void run_chunks();

  std::vector<std::thread> workers_;
  std::string start_failure_;
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

// The process-wide pool, sized from FALCON_NUM_THREADS or the number of online CPUs (or fewer, when
// the system refuses more threads). Shared, so a call that runs on it keeps it alive.
std::shared_ptr<ThreadPool> global_thread_pool();
// Replaces the process-wide pool; calls already running finish on the pool they started with. Throws
// Error(State) and keeps the current pool when the system refuses the threads.
void set_global_thread_count(int num_threads);
// The pool the calling thread's native call runs on: the one a ThreadPoolPin holds, else the global one.
std::shared_ptr<ThreadPool> current_thread_pool();

// Pins the global pool for one native call on this thread, so every operator of the call runs on
// the pool it started with and setNumThreads never frees a pool under running work.
class ThreadPoolPin {
 public:
  ThreadPoolPin();
  ~ThreadPoolPin();
  ThreadPoolPin(const ThreadPoolPin&) = delete;
  ThreadPoolPin& operator=(const ThreadPoolPin&) = delete;

 private:
  std::shared_ptr<ThreadPool> previous_;
};

int default_thread_count();

}  // namespace falcon
