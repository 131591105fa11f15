#include "thread_pool.h"

#include <chrono>

#include "common.h"

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace hmoe {

void cpu_relax() {
#if HMOE_X86
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

bool pin_current_thread(int cpu) {
  if (cpu < 0) return true;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
#else
  return false;
#endif
}

ThreadPool::ThreadPool(int nthreads, std::vector<int> cpu_of_thread, int spin_us)
    : n_(nthreads < 1 ? 1 : nthreads),
      spin_us_(spin_us < 0 ? 0 : spin_us),
      cpus_(std::move(cpu_of_thread)),
      slots_(static_cast<size_t>(n_)) {
  cpus_.resize(static_cast<size_t>(n_), -1);
  threads_.reserve(static_cast<size_t>(n_ - 1));
  for (int t = 1; t < n_; ++t) threads_.emplace_back(&ThreadPool::worker, this, t);
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_seq_cst);
  {
    std::lock_guard<std::mutex> lk(mu_);
    cv_.notify_all();
  }
  for (auto& t : threads_) t.join();
}

void ThreadPool::call(int tid) {
  uint64_t t0 = now_ns();
  try {
    fn_(ctx_, tid);
  } catch (...) {
    std::lock_guard<std::mutex> lk(err_mu_);
    if (!err_) err_ = std::current_exception();
  }
  slots_[static_cast<size_t>(tid)].busy.fetch_add(now_ns() - t0, std::memory_order_relaxed);
}

void ThreadPool::run(Fn fn, void* ctx) {
  fn_ = fn;
  ctx_ = ctx;
  err_ = nullptr;
  if (n_ > 1) {
    pending_.store(n_ - 1, std::memory_order_relaxed);
    gen_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_.notify_all();
    }
  }
  call(0);
  if (n_ > 1) {
    unsigned spins = 0;
    while (pending_.load(std::memory_order_acquire) != 0) {
      if (++spins < (1u << 20))
        cpu_relax();
      else
        std::this_thread::yield();
    }
  }
  if (err_) {
    std::exception_ptr e = err_;
    err_ = nullptr;
    std::rethrow_exception(e);
  }
}

void ThreadPool::worker(int tid) {
  if (!pin_current_thread(cpus_[static_cast<size_t>(tid)])) pin_failed_.store(true);
  uint64_t seen = 0;
  for (;;) {
    uint64_t deadline = now_ns() + static_cast<uint64_t>(spin_us_) * 1000u;
    unsigned spins = 0;
    bool got = false;
    for (;;) {
      if (gen_.load(std::memory_order_acquire) != seen) {
        got = true;
        break;
      }
      if (stop_.load(std::memory_order_relaxed)) return;
      cpu_relax();
      if ((++spins & 63u) == 0) {
        if (hot_.load(std::memory_order_relaxed)) {
          deadline = now_ns() + static_cast<uint64_t>(spin_us_) * 1000u;
        } else if (now_ns() > deadline) {
          break;
        }
      }
    }
    if (!got) {
      std::unique_lock<std::mutex> lk(mu_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      cv_.wait(lk, [&] {
        return gen_.load(std::memory_order_seq_cst) != seen || stop_.load(std::memory_order_seq_cst);
      });
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      if (stop_.load()) return;
    }
    seen = gen_.load(std::memory_order_acquire);
    call(tid);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

uint64_t ThreadPool::busy_ns_total() const {
  uint64_t s = 0;
  for (const auto& sl : slots_) s += sl.busy.load(std::memory_order_relaxed);
  return s;
}

void ThreadPool::reset_busy() {
  for (auto& sl : slots_) sl.busy.store(0, std::memory_order_relaxed);
}

}  // namespace hmoe
