// UffdWpTracker: the synchronous userfaultfd write-protect backend
// ("uffd-wp"), exposed internally so that pagewise code (the live snapshot)
// can act on each first write before it happens.
//
// Tracker::Create({.backend = TrackBackend::kUffdWp}) returns an object of
// this class; dynamic_cast<UffdWpTracker*>(tracker.get()) gives access to
// SetFaultHook().
//
// How it works: Track() registers the range in UFFDIO_REGISTER_MODE_WP and
// write-protects it. A tracker thread polls the userfaultfd (and a stop
// eventfd); for each write-protect fault it takes the fault lock, records the
// page as written, calls the fault hook, unprotects the page (which wakes the
// writer) and releases the lock. Collect() takes the same lock to exchange the
// written bits and re-protect exactly those pages, so "record + unprotect" and
// "collect + re-protect" never interleave: a page is either reported by this
// collect and re-protected, or still writable with its bit set for the next.
// Collect() also sweeps the ranges for pages that are writable without having
// faulted (PAGEMAP_SCAN, or /proc/self/pagemap bit 57 where PAGEMAP_SCAN is
// missing): MADV_DONTNEED on anonymous memory drops the ptes together with
// their write protection, and later writes there raise no fault. Such pages
// are reported (their content changed to zero) and protected again.
//
// Requirements on the program (in addition to tracker.h's):
//   - The tracker's own memory is never tracked: Track() refuses ranges that
//     overlap the tracker thread's stack or the tracker's bitmaps.
//   - Do not track the stack of a thread that calls Collect(): Collect()
//     writes its own stack while holding the fault lock, and a write fault
//     there would wait for the tracker thread, which waits for the lock.
//   - The fault hook must not write tracked memory nor call into the tracker.
//
// Thread safety: as Tracker. SetFaultHook may be called from any thread; it
// takes the fault lock, so it waits for a hook call in progress.
#ifndef PAGEWISE_TRACK_UFFD_WP_TRACKER_H_
#define PAGEWISE_TRACK_UFFD_WP_TRACKER_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "pagewise/tracker.h"
#include "sys/env.h"

namespace pagewise {

class UffdWpTracker : public Tracker {
 public:
  // Installs `hook`, called on the tracker thread for each write-protect
  // fault on a tracked page: AFTER the page is recorded as written and BEFORE
  // it is unprotected and the writer woken, with the fault lock held. So the
  // hook sees the page's content before the faulting write (and before any
  // other write to that page since the previous collect). page_addr is page
  // aligned. The hook must be quick, must not write tracked memory, and must
  // not call into this tracker nor madvise/mprotect/mremap (pagewise
  // interposes those, and they may wait for the fault lock): deadlock.
  // Writers of other pages keep being served only after the hook returns.
  // nullptr removes the hook.
  virtual void SetFaultHook(std::function<void(uint64_t page_addr)> hook) = 0;
};

namespace track_internal {

// Knobs for tests: turn off kernel features to exercise the fallbacks a
// kernel without them would take.
struct UffdWpOptions {
  // Ask for UFFD_FEATURE_WP_UNPOPULATED when offered. Without it, Track() and
  // Collect() read-fault empty pages before protecting them (the kernel
  // cannot write-protect an empty pte).
  bool use_wp_unpopulated = true;
  // Sweep with PAGEMAP_SCAN when available; otherwise read /proc/self/pagemap.
  bool use_pagemap_scan = true;
};

Result<std::unique_ptr<UffdWpTracker>> NewUffdWpTracker(Env* env, const KernelFeatures& features,
                                                        const UffdWpOptions& options);

}  // namespace track_internal
}  // namespace pagewise

#endif  // PAGEWISE_TRACK_UFFD_WP_TRACKER_H_
