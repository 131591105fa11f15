#include "task_queue.h"

#include "thread_pool.h"

namespace hmoe {

TaskQueue::TaskQueue(int spin_us) : spin_us_(spin_us < 0 ? 0 : spin_us), ring_(16) {}

uint64_t TaskQueue::push(Task&& t) {
  uint64_t ticket;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (count_ == ring_.size()) {  // grow (rare): unroll the ring into a bigger one
      std::vector<Task> bigger(ring_.size() * 2);
      for (size_t i = 0; i < count_; ++i) bigger[i] = std::move(ring_[(head_ + i) % ring_.size()]);
      ring_.swap(bigger);
      head_ = 0;
    }
    ticket = submitted_.load(std::memory_order_relaxed) + 1;
    t.ticket = ticket;
    ring_[(head_ + count_) % ring_.size()] = std::move(t);
    ++count_;
    count_hint_.store(count_, std::memory_order_release);
    submitted_.store(ticket, std::memory_order_release);
  }
  cv_push_.notify_one();
  return ticket;
}

bool TaskQueue::pop(Task* out) {
  // Spin briefly (a decode step submits the next layer within microseconds), then sleep.
  const uint64_t deadline = now_ns() + static_cast<uint64_t>(spin_us_) * 1000u;
  unsigned spins = 0;
  while (count_hint_.load(std::memory_order_acquire) == 0) {
    cpu_relax();
    if ((++spins & 63u) == 0 && now_ns() > deadline) break;
  }
  std::unique_lock<std::mutex> lk(mu_);
  cv_push_.wait(lk, [&] { return count_ > 0 || stop_; });
  if (count_ == 0) return false;
  *out = std::move(ring_[head_]);
  ring_[head_].fn = nullptr;
  head_ = (head_ + 1) % ring_.size();
  --count_;
  count_hint_.store(count_, std::memory_order_release);
  return true;
}

void TaskQueue::complete(uint64_t ticket, const std::string* error) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (error) errors_.emplace_back(ticket, *error);
    done_.store(ticket, std::memory_order_release);
  }
  if (done_waiters_.load(std::memory_order_acquire) > 0) cv_done_.notify_all();
}

bool TaskQueue::wait(uint64_t ticket, std::string* error) {
  if (ticket == 0) ticket = submitted_.load(std::memory_order_acquire);
  if (done_.load(std::memory_order_acquire) < ticket) {
    // Short spin, then block.
    for (int i = 0; i < 2000 && done_.load(std::memory_order_acquire) < ticket; ++i) cpu_relax();
    if (done_.load(std::memory_order_acquire) < ticket) {
      std::unique_lock<std::mutex> lk(mu_);
      done_waiters_.fetch_add(1, std::memory_order_acq_rel);
      cv_done_.wait(lk, [&] { return done_.load(std::memory_order_acquire) >= ticket || stop_; });
      done_waiters_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  for (size_t i = 0; i < errors_.size(); ++i) {
    if (errors_[i].first <= ticket) {
      if (error) *error = errors_[i].second;
      errors_.erase(errors_.begin() + static_cast<long>(i));
      return false;
    }
  }
  return true;
}

void TaskQueue::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_push_.notify_all();
  cv_done_.notify_all();
}

}  // namespace hmoe
