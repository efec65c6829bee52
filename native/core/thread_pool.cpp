#include "thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <memory>

#include <unistd.h>

namespace falcon {

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < std::max(1, num_threads); ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::run_chunks() {
  for (;;) {
    int64_t begin;
    {
      std::lock_guard<std::mutex> lock(state_mutex_);
      if (next_ >= count_) return;
      begin = next_;
      next_ = std::min(count_, next_ + chunk_);
    }
    (*body_)(begin, std::min(count_, begin + chunk_));
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen_generation = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(state_mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
      if (stopping_) return;
      seen_generation = generation_;
      ++busy_workers_;
    }
    run_chunks();
    {
      std::lock_guard<std::mutex> lock(state_mutex_);
      --busy_workers_;
    }
    done_.notify_all();
  }
}

void ThreadPool::parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  const int64_t threads = num_threads();
  if (threads == 1 || count <= grain) {
    body(0, count);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    body_ = &body;
    count_ = count;
    // A few chunks per thread balance uneven work without much locking.
    chunk_ = std::max(grain, (count + threads * 4 - 1) / (threads * 4));
    next_ = 0;
    ++generation_;
  }
  wake_.notify_all();
  run_chunks();
  std::unique_lock<std::mutex> lock(state_mutex_);
  done_.wait(lock, [&] { return next_ >= count_ && busy_workers_ == 0; });
  body_ = nullptr;
}

int default_thread_count() {
  if (const char* env = std::getenv("FALCON_NUM_THREADS")) {
    int requested = std::atoi(env);
    if (requested > 0) return requested;
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? int(online) : 1;
}

namespace {
std::unique_ptr<ThreadPool>& pool_slot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
std::mutex& pool_slot_mutex() {
  static std::mutex mutex;
  return mutex;
}
}  // namespace

ThreadPool& global_thread_pool() {
  std::lock_guard<std::mutex> lock(pool_slot_mutex());
  auto& pool = pool_slot();
  if (!pool) pool = std::make_unique<ThreadPool>(default_thread_count());
  return *pool;
}

void set_global_thread_count(int num_threads) {
  std::lock_guard<std::mutex> lock(pool_slot_mutex());
  pool_slot() = std::make_unique<ThreadPool>(std::max(1, num_threads));
}

}  // namespace falcon
