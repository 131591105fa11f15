// FIFO of engine tasks with tickets: push() returns at once with a ticket (1, 2, ...), one
// runner thread pops and executes tasks in order, wait(t) blocks until task t has completed.
// A task that failed leaves its message; the first wait() covering it reports it (once).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace hmoe {

struct ForwardArgs {
  int layer = 0;
  int T = 0;                      // token count, unless T_ptr is set
  const int32_t* T_ptr = nullptr;  // read when the task starts (written by a CUDA stream first)
  int max_T = 0;                  // bound for *T_ptr (the caller's buffer rows)
  int k = 0;
  const uint16_t* hidden = nullptr;  // [T, H] bf16
  const void* ids = nullptr;         // [T, k] int32 or int64
  bool ids64 = false;
  const float* weights = nullptr;  // [T, k]
  uint16_t* out = nullptr;         // [T, H] bf16
};

struct Task {
  enum Kind { FORWARD = 0, GENERIC = 1 } kind = FORWARD;
  ForwardArgs fwd;
  std::function<void()> fn;  // GENERIC only (packing, benchmarks: not on the hot path)
  uint64_t ticket = 0;
};

class TaskQueue {
 public:
  explicit TaskQueue(int spin_us);
  // Enqueue; returns the ticket. Thread-safe.
  uint64_t push(Task&& t);
  // Runner side: blocks until a task is available (false once stopped and drained).
  bool pop(Task* out);
  void complete(uint64_t ticket, const std::string* error);
  // Wait for `ticket` (0 = everything submitted so far). Returns false and fills *error if a
  // task up to it failed and was not reported yet.
  bool wait(uint64_t ticket, std::string* error);
  uint64_t submitted() const { return submitted_.load(std::memory_order_acquire); }
  uint64_t completed() const { return done_.load(std::memory_order_acquire); }
  void stop();

 private:
  int spin_us_;
  std::mutex mu_;
  std::condition_variable cv_push_, cv_done_;
  std::vector<Task> ring_;  // grow-only ring buffer
  size_t head_ = 0, count_ = 0;
  std::atomic<size_t> count_hint_{0};
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> done_{0};
  std::atomic<int> done_waiters_{0};
  bool stop_ = false;
  std::vector<std::pair<uint64_t, std::string>> errors_;
};

}  // namespace hmoe
