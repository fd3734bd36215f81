// TaskPool implementation: one mutex, one condition variable, a deque.
#include "image/writer_pool.h"

#include <utility>

namespace pagewise::image {

TaskPool::~TaskPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  // Without helpers, or if they stopped first: run what is left here.
  while (RunOne()) {
  }
}

void TaskPool::Submit(std::function<void()> task) {
  if (helpers_ == 0) {
    task();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (threads_.empty()) {
      for (int i = 0; i < helpers_; ++i) threads_.emplace_back([this] { Main(); });
    }
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

bool TaskPool::RunOne() {
  std::function<void()> task;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty()) return false;
    task = std::move(queue_.front());
    queue_.pop_front();
  }
  task();
  return true;
}

void TaskPool::Main() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace pagewise::image
