// FaultQueue implementation: one mutex, two condition variables.
#include "live/fault_queue.h"

namespace pagewise::live {

FaultQueue::FaultQueue(size_t max_pages, size_t page_size)
    : max_pages_(max_pages == 0 ? 1 : max_pages), page_size_(page_size) {}

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
    if (buffers_.size() < max_pages_) {
      buffers_.emplace_back(new char[page_size_]);
      return buffers_.back().get();
    }
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
  if (buffers_.size() < max_pages_) {
    buffers_.emplace_back(new char[page_size_]);
    return buffers_.back().get();
  }
  return nullptr;
}

bool FaultQueue::TakeOldest(QueuedPage* page) {
  std::lock_guard<std::mutex> lock(mu_);
  if (queue_.empty()) return false;
  *page = queue_.front();
  queue_.pop_front();
  return true;
}

void FaultQueue::Push(const QueuedPage& page) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(page);
  }
  queue_cv_.notify_one();
}

void FaultQueue::Take(std::vector<QueuedPage>* out, bool wait) {
  std::unique_lock<std::mutex> lock(mu_);
  if (wait) {
    queue_cv_.wait(lock, [&] { return !queue_.empty() || aborted_ || kicked_; });
    kicked_ = false;
  }
  out->insert(out->end(), queue_.begin(), queue_.end());
  queue_.clear();
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
  return buffers_.size() * page_size_;
}

}  // namespace pagewise::live
