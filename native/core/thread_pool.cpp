#include "thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <system_error>
#include <utility>

#include "error.h"
#include "platform.h"

namespace falcon {

namespace {

// Polls `ready` for up to a couple of milliseconds, longer than the gaps between the calls of one
// forward pass and between decoded tokens; true once it holds.
template <typename Ready>
bool poll(Ready ready) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
  for (int round = 0;; ++round) {
    if (ready()) return true;
    if (round % 64 == 63 && std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::yield();
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  workers_.reserve(size_t(std::max(1, num_threads) - 1));
  for (int i = 1; i < std::max(1, num_threads); ++i) {
    try {
      workers_.emplace_back([this] { worker_loop(); });
    } catch (const std::system_error& e) {
      start_failure_ = e.what();
      break;
    }
  }
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
    const int64_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (begin >= count_) return;
    (*body_)(begin, std::min(count_, begin + chunk_));
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen_generation = 0;
  for (;;) {
    auto called = [&] { return stopping_.load() || generation_.load(std::memory_order_acquire) != seen_generation; };
    if (!poll(called)) {
      std::unique_lock<std::mutex> lock(state_mutex_);
      ++sleeping_workers_;
      wake_.wait(lock, called);
      --sleeping_workers_;
    }
    if (stopping_) return;
    seen_generation = generation_.load(std::memory_order_acquire);
    run_chunks();
    if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Under the lock, so a caller between checking and sleeping cannot miss it.
      std::lock_guard<std::mutex> lock(state_mutex_);
      done_.notify_one();
    }
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
  body_ = &body;
  count_ = count;
  // A few chunks per thread balance uneven work.
  chunk_ = std::max(grain, (count + threads * 4 - 1) / (threads * 4));
  next_.store(0, std::memory_order_relaxed);
  busy_workers_.store(int(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (sleeping_workers_ > 0) wake_.notify_all();
  }
  run_chunks();
  // Every worker reports back, so none can still be reading this call's body when it returns.
  auto finished = [&] { return busy_workers_.load(std::memory_order_acquire) == 0; };
  if (!poll(finished)) {
    std::unique_lock<std::mutex> lock(state_mutex_);
    done_.wait(lock, finished);
  }
  body_ = nullptr;
}

int default_thread_count() {
  if (const char* env = std::getenv("FALCON_NUM_THREADS")) {
    int requested = std::atoi(env);
    if (requested > 0) return requested;
  }
  return platform::online_cpu_count();
}

namespace {

std::shared_ptr<ThreadPool>& pool_slot() {
  static std::shared_ptr<ThreadPool> pool;
  return pool;
}

std::mutex& pool_slot_mutex() {
  static std::mutex mutex;
  return mutex;
}

thread_local std::shared_ptr<ThreadPool> pinned_pool;

}  // namespace

std::shared_ptr<ThreadPool> global_thread_pool() {
  std::lock_guard<std::mutex> lock(pool_slot_mutex());
  auto& pool = pool_slot();
  if (!pool) pool = std::make_shared<ThreadPool>(default_thread_count());
  return pool;
}

void set_global_thread_count(int num_threads) {
  auto pool = std::make_shared<ThreadPool>(std::max(1, num_threads));
  if (pool->num_threads() < num_threads) {
    throw Error(ErrorKind::State, "cannot start " + std::to_string(num_threads) + " threads (the system allowed " +
                                      std::to_string(pool->num_threads()) + ": " + pool->start_failure() +
                                      "); the pool keeps its " + std::to_string(global_thread_pool()->num_threads()) +
                                      " threads");
  }
  std::shared_ptr<ThreadPool> replaced;
  {
    std::lock_guard<std::mutex> lock(pool_slot_mutex());
    replaced = std::exchange(pool_slot(), std::move(pool));
  }
  // Dropped outside the lock: when no call holds it, its idle workers are joined here, which is quick.
}

std::shared_ptr<ThreadPool> current_thread_pool() { return pinned_pool ? pinned_pool : global_thread_pool(); }

ThreadPoolPin::ThreadPoolPin() : previous_(pinned_pool) { pinned_pool = global_thread_pool(); }

ThreadPoolPin::~ThreadPoolPin() { pinned_pool = std::move(previous_); }

}  // namespace falcon
