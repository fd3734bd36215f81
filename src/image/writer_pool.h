// TaskPool: the image writer's helper threads. Tasks run in FIFO order on
// the helpers, or on a thread that calls RunOne() (a caller waiting for the
// pipeline helps instead of sleeping). Helper threads are started by the
// first Submit(), so they are created by (and inherit the scheduling
// priority of) the thread that first feeds the writer - a live snapshot's
// niced saver, for instance - and a writer that never needs them never
// starts them.
//
// FIFO matters: a task may wait for an EARLIER task to reach a point (the
// writer applies batches in order); since every earlier task was dequeued
// before it, that task is already running on some thread, so such waits
// cannot deadlock.
//
// Thread safety: every method may be called from any thread. The destructor
// runs the tasks still queued, then joins the helpers; tasks must not
// outlive what they reference (the writer drains the pool first).
#ifndef PAGEWISE_IMAGE_WRITER_POOL_H_
#define PAGEWISE_IMAGE_WRITER_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pagewise::image {

class TaskPool {
 public:
  // `helpers` >= 0 threads (0: Submit runs the task on the caller).
  explicit TaskPool(int helpers) : helpers_(helpers) {}
  ~TaskPool();
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  int helpers() const { return helpers_; }

  // Queues `task` (runs it now on the caller if there are no helpers).
  void Submit(std::function<void()> task);
  // Runs the oldest queued task on the calling thread; false if none.
  bool RunOne();

 private:
  void Main();

  const int helpers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_WRITER_POOL_H_
