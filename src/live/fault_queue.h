// FaultQueue: the live snapshot's spill area, a bounded pool of page
// buffers carrying pages copied by the fault path to the saver thread, which
// hands them to the image writer's pipeline in large batches. The fault
// path's writer is released after the copy, never after image I/O; the pool
// bound caps the memory this costs (when it is exhausted the fault path
// waits for the saver to move spilled pages into the writer's staging).
//
// All memory (the page buffers, one block; the queue ring) is allocated by
// the constructor: the fault path never calls malloc, whose arena growth
// (mmap/mprotect) would wait for the mmap lock - held for long, for
// instance, by the write-protect ioctl of a large range. Buffers are handed
// out lowest first and reused, so untouched ones stay non-resident; the
// high-water mark is reported by peak_bytes().
//
// Thread safety: every method is safe from any thread concurrently.
#ifndef PAGEWISE_LIVE_FAULT_QUEUE_H_
#define PAGEWISE_LIVE_FAULT_QUEUE_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace pagewise::live {

struct QueuedPage {
  uint32_t region = 0;   // image region index
  uint64_t offset = 0;   // byte offset in the region
  char* data = nullptr;  // a buffer from Acquire(), page_size bytes
};

class FaultQueue {
 public:
  // max_pages >= 1 buffers of page_size bytes at most.
  FaultQueue(size_t max_pages, size_t page_size);
  ~FaultQueue();
  FaultQueue(const FaultQueue&) = delete;
  FaultQueue& operator=(const FaultQueue&) = delete;

  // Returns a free buffer (owned by the pool; hand it back with Push or
  // Release). Blocks while all max_pages buffers are in use. Returns nullptr
  // once Abort() was called.
  char* Acquire();
  // As Acquire, but never blocks: nullptr when every buffer is in use (or
  // after Abort()).
  char* TryAcquire();
  // Removes the oldest queued page into *page (its buffer now belongs to
  // the caller). False when nothing is queued.
  bool TakeOldest(QueuedPage* page);
  // Queues a filled buffer for the saver.
  void Push(const QueuedPage& page);
  // Moves every queued page into *out (appends). If none is queued and
  // `wait` is true, blocks until one is, or until Abort() or Kick().
  void Take(std::vector<QueuedPage>* out, bool wait);
  // Returns a buffer to the pool (after the saver wrote it).
  void Release(char* buffer);
  // Wakes a Take(wait=true) without queueing anything.
  void Kick();
  // Fails every current and future Acquire() and wakes every waiter.
  void Abort();

  size_t peak_bytes() const;
  size_t capacity() const;
  // Buffers free now (may change right after).
  size_t available() const;
  // How many Acquire() calls had to wait for a buffer.
  uint64_t waits() const;

 private:
  const size_t max_pages_;
  const size_t page_size_;
  mutable std::mutex mu_;
  std::condition_variable free_cv_;   // a buffer was released, or abort
  std::condition_variable queue_cv_;  // a page was queued, kick, or abort
  std::unique_ptr<char[]> block_;     // max_pages_ buffers
  size_t used_ = 0;                   // buffers ever handed out (high-water mark)
  std::vector<char*> free_;           // returned buffers (capacity max_pages_)
  std::vector<QueuedPage> ring_;      // queued pages (size max_pages_)
  size_t head_ = 0, count_ = 0;
  uint64_t waits_ = 0;
  bool aborted_ = false;
  bool kicked_ = false;
};

}  // namespace pagewise::live

#endif  // PAGEWISE_LIVE_FAULT_QUEUE_H_
