// DropEvents: how the uffd-wp-async tracker sees drops the kernel hides
// from PAGEMAP_SCAN, without libc interposition.
//
// Why: on every mapping that is not anonymous private memory (shmem/memfd,
// MAP_SHARED|MAP_ANONYMOUS, hugetlbfs private or shared, private file
// mappings), zapping a write-protected pte leaves a uffd-wp marker in its
// place. So madvise(MADV_REMOVE) on shmem, or MADV_DONTNEED on private
// hugetlbfs or a private memfd mapping, changes the page's content (to zero,
// or back to the file's) while the page still reads as "not written"; and a
// later read fault keeps the marker's protection, so neither PAGEMAP_SCAN's
// PRESENT nor WRITTEN bits can tell afterwards (measured on 6.18). The
// madvise interposer of libpagewise-interpose saw these calls, but a program
// linked with libpagewise alone has no interposer, and raw madvise system
// calls bypass it anyway.
//
// How: the kernel itself reports these drops as UFFD_EVENT_REMOVE on a
// userfaultfd that asked for UFFD_FEATURE_EVENT_REMOVE (madvise DONTNEED,
// DONTNEED_LOCKED, REMOVE and FREE on registered memory, whoever calls it),
// and the madvise caller waits until the event is read. So the tracker
// registers such mappings on a second userfaultfd (this class: WP_ASYNC plus
// EVENT_REMOVE), whose reader thread (sys::UffdLoop) hands each removed
// range to a sink. Anonymous private memory stays on the tracker's plain
// userfaultfd, whose drops PAGEMAP_SCAN does report: no thread, no event
// round trip on its madvise calls.
//
// Ordering: the reader holds a mutex from before its read(2) until every
// message of the batch went to the sink, and Sync() takes that mutex and
// reads what is pending itself. A madvise returns only after its event was
// read; so once Sync() returns, every drop whose madvise returned before
// Sync() was called has reached the sink (the tracker's Collect calls it
// first: nothing dropped before a collect is left to a later one).
//
// Not seen (documented in tracker.h): writes through the file rather than
// through the tracked mapping (write(2), fallocate(PUNCH_HOLE), truncate,
// another mapping of the same file), which no mapping-based tracker sees.
//
// Thread safety: every method may be called from any thread of the process
// that created the object. The sink runs on the reader thread (or on the
// thread inside Sync()) under the reader's mutex; it must be quick and must
// not call back into this object. While a REMOVE event is pending the
// kernel fails this userfaultfd's UFFDIO_WRITEPROTECT with EAGAIN:
// WriteProtect() below reads the pending events and retries.
#ifndef PAGEWISE_TRACK_DROP_EVENTS_H_
#define PAGEWISE_TRACK_DROP_EVENTS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "pagewise/status.h"
#include "sys/env.h"
#include "sys/uffd_loop.h"
#include "sys/userfaultfd.h"

namespace pagewise::track_internal {

class DropEvents {
 public:
  using Sink = std::function<void(uint64_t start, uint64_t end)>;

  // Opens the userfaultfd (WP, WP_ASYNC, WP_UNPOPULATED, EVENT_REMOVE
  // required; WP_HUGETLBFS_SHMEM optional) and starts the reader thread.
  // `env` must outlive the object. Errors: kNotSupported if the kernel lacks
  // a required feature; the errors of userfaultfd/eventfd/mmap otherwise.
  // Nothing is left open on error.
  static Result<std::unique_ptr<DropEvents>> Start(Env* env, Sink sink);

  // Stops and joins the reader (in the creating process; in a forked child
  // there is no reader, and the descriptors are only closed). Closing the
  // userfaultfd unregisters what is still registered on it.
  ~DropEvents();
  DropEvents(const DropEvents&) = delete;
  DropEvents& operator=(const DropEvents&) = delete;

  const sys::Userfaultfd& uffd() const { return uffd_; }

  // UFFDIO_WRITEPROTECT on this userfaultfd, retried after reading the
  // events whose pending state made the kernel answer EAGAIN.
  Status WriteProtect(uint64_t start, uint64_t len);

  // Hands every event read so far, and every event pending now, to the
  // sink before it returns (see "Ordering"). Errors: a failed read of the
  // userfaultfd (the events stay queued for the reader).
  Status Sync();

 private:
  DropEvents(Env* env, sys::Userfaultfd uffd, std::unique_ptr<sys::UffdLoop> loop, Sink sink);
  void Run();

  class Handler;
  Env* const env_;
  sys::Userfaultfd uffd_;
  std::unique_ptr<sys::UffdLoop> loop_;
  std::unique_ptr<Handler> handler_;
  const pid_t pid_;
  std::mutex read_mu_;  // held across each read of the userfaultfd and its dispatch
  std::unique_ptr<std::thread> thread_;
};

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_DROP_EVENTS_H_
