// Persistent worker pool: run(fn, ctx) executes fn(ctx, tid) on every thread (tid 0 is the
// caller) and returns when all have finished. Idle workers spin for `spin_us` then sleep on a
// condition variable; while the pool is "hot" (inside one engine task) they spin between
// phases so consecutive phases start without a wake-up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace hmoe {

void cpu_relax();
uint64_t now_ns();
// Pin the calling thread to `cpu` (no-op when cpu < 0 or unsupported); false on failure.
bool pin_current_thread(int cpu);

class ThreadPool {
 public:
  using Fn = void (*)(void* ctx, int tid);

  // cpu_of_thread[i] >= 0 pins thread i (thread 0 = whoever calls run(): the engine's runner,
  // which pins itself with pin_current_thread).
  ThreadPool(int nthreads, std::vector<int> cpu_of_thread, int spin_us);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_; }
  void run(Fn fn, void* ctx);
  void set_hot(bool hot) { hot_.store(hot, std::memory_order_release); }

  uint64_t busy_ns_total() const;
  void reset_busy();
  bool pin_failed() const { return pin_failed_.load(); }

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> busy{0};
  };
  void worker(int tid);
  void call(int tid);

  int n_;
  int spin_us_;
  std::vector<int> cpus_;
  std::vector<std::thread> threads_;
  std::vector<Slot> slots_;
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> hot_{false};
  std::atomic<bool> pin_failed_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::mutex err_mu_;
  std::exception_ptr err_;
};

}  // namespace hmoe
