// FaultQueue implementation: one mutex, two condition variables, and only
// preallocated memory.
#include "live/fault_queue.h"

namespace pagewise::live {

FaultQueue::FaultQueue(size_t max_pages, size_t page_size)
    : max_pages_(max_pages == 0 ? 1 : max_pages),
      page_size_(page_size),
      block_(new char[max_pages_ * page_size]),
      ring_(max_pages_) {
  free_.reserve(max_pages_);
}

FaultQueue::~FaultQueue() = default;

char* FaultQueue::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  bool counted = false;
  for (;;) {
    if (aborted_) return nullptr;
    if (!free_.empty()) {
      char* b = free_.back();
      free_.pop_back();
      return b;
    }
    if (used_ < max_pages_) return block_.get() + page_size_ * used_++;
    if (!counted) {
      waits_++;
      counted = true;
    }
    free_cv_.wait(lock);
  }
}

char* FaultQueue::TryAcquire() {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return nullptr;
  if (!free_.empty()) {
    char* b = free_.back();
    free_.pop_back();
    return b;
  }
  if (used_ < max_pages_) return block_.get() + page_size_ * used_++;
  return nullptr;
}

bool FaultQueue::TakeOldest(QueuedPage* page) {
  std::lock_guard<std::mutex> lock(mu_);
  if (count_ == 0) return false;
  *page = ring_[head_];
  head_ = (head_ + 1) % max_pages_;
  count_--;
  return true;
}

void FaultQueue::Push(const QueuedPage& page) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Every queued page holds one of max_pages_ buffers: the ring has room.
    ring_[(head_ + count_) % max_pages_] = page;
    count_++;
  }
  queue_cv_.notify_one();
}

void FaultQueue::Take(std::vector<QueuedPage>* out, bool wait) {
  std::unique_lock<std::mutex> lock(mu_);
  if (wait) {
    queue_cv_.wait(lock, [&] { return count_ != 0 || aborted_ || kicked_; });
    kicked_ = false;
  }
  for (; count_ > 0; count_--) {
    out->push_back(ring_[head_]);
    head_ = (head_ + 1) % max_pages_;
  }
}

void FaultQueue::Release(char* buffer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(buffer);
  }
  free_cv_.notify_one();
}

void FaultQueue::Kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    kicked_ = true;
  }
  queue_cv_.notify_all();
}

void FaultQueue::Abort() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
  }
  free_cv_.notify_all();
  queue_cv_.notify_all();
}

uint64_t FaultQueue::waits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waits_;
}

size_t FaultQueue::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_ * page_size_;
}

size_t FaultQueue::capacity() const { return max_pages_; }

size_t FaultQueue::available() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_.size() + (max_pages_ - used_);
}

}  // namespace pagewise::live
