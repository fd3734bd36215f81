// UffdWpTrackerImpl: the uffd-wp backend's tracker (uffd_wp_tracker.h gives
// the protocol and its reasons), shared by its two source files:
//   uffd_wp.cc          lifecycle, Track/Untrack, the tracker thread that
//                       serves write-protect faults, and the factory;
//   uffd_wp_collect.cc  Collect and the sweep for pages that became writable
//                       without a fault.
//
// Thread safety: as UffdWpTracker. Two locks: api_mu_ serialises
// Track/Untrack/Collect; fs_->mu, "the fault lock", is held by the tracker
// thread across "record + hook + unprotect" of one fault and by Collect
// across "exchange bits + re-protect". Lock order: api_mu_, then fs_->mu.
// ranges_ changes only under both; the fault path reads it under fs_->mu.
#ifndef PAGEWISE_TRACK_UFFD_WP_IMPL_H_
#define PAGEWISE_TRACK_UFFD_WP_IMPL_H_

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "pagewise/status.h"
#include "pagewise/tracker.h"
#include "sys/env.h"
#include "sys/pagemap.h"
#include "sys/uffd_loop.h"
#include "sys/userfaultfd.h"
#include "track/memory_events.h"
#include "track/track_internal.h"
#include "track/uffd_wp_tracker.h"

namespace pagewise::track_internal {

// State the tracker thread writes while serving a fault. It lives in its own
// mapping, not the heap, so that tracking heap memory cannot make the
// tracker thread fault on itself.
struct FaultState {
  std::mutex mu;        // "the fault lock"
  uint64_t faults = 0;  // guarded by mu
  int error = 0;        // first errno of a failed unprotect/read, guarded by mu
  uint64_t error_addr = 0;
  const char* error_op = nullptr;
};

class UffdWpTrackerImpl final : public UffdWpTracker, public MemoryEventListener {
 public:
  struct Range {
    uint64_t start = 0, end = 0;
    PageBitmap bits;     // written since the last collect (fault lock)
    PageBitmap scratch;  // Collect's working set (api_mu_)
    PageBitmap extra;    // Collect: faulted pages its sweep did not see (api_mu_)
  };

  // Takes ownership of everything it is given: `uffd`, `loop` (with `uffd`
  // added as its source), `fs` (a FaultState constructed in a page of its
  // own mapping), `scanner` (nullopt: sweep by reading `pagemap_fd`, an open
  // /proc/self/pagemap, else -1). `unpopulated`: UFFD_FEATURE_WP_UNPOPULATED
  // was granted.
  UffdWpTrackerImpl(Env* env, sys::Userfaultfd uffd, std::unique_ptr<sys::UffdLoop> loop,
                    FaultState* fs, std::optional<sys::PagemapScanner> scanner, int pagemap_fd,
                    bool unpopulated);
  // Starts the tracker thread; waits until it published its stack range.
  // Call once, right after construction.
  void Start();
  ~UffdWpTrackerImpl() override;

  TrackBackend backend() const override { return TrackBackend::kUffdWp; }
  void SetFaultHook(std::function<void(uint64_t)> hook) override;
  Status Track(void* addr, size_t len) override;
  Status Untrack(void* addr, size_t len) override;
  Status Collect(std::vector<PageRange>* written) override;  // uffd_wp_collect.cc
  TrackerStats stats() const override;
  std::vector<PageRange> tracked() const override;
  void OnDropped(uint64_t start, uint64_t end) override;

 private:
  // Drops of shared and file-backed memory leave uffd-wp markers (the page
  // changed, no fault comes, and it still reads as protected): this backend
  // sees them only through the madvise interposer. Without it, refuses such
  // memory rather than lose those writes.
  static Status CheckDropsVisible(const std::vector<Vma>& vmas, uint64_t start, uint64_t end);
  // kFailedPrecondition in a forked child (the tracker is the parent's).
  Status CheckProcess(const char* op) const;
  // Caller holds api_mu_ (or fs_->mu).
  std::vector<PageRange> TrackedLocked() const;
  // Refuses ranges holding memory the tracker thread writes.
  Status CheckOwnMemory(uint64_t start, uint64_t end) const;
  // Caller holds fs_->mu and api_mu_.
  void InsertSorted(std::unique_ptr<Range> r);
  // Caller holds api_mu_. Takes the fault lock to unlink; returns the range
  // (null if absent), whose bitmaps unmap when the caller drops it.
  std::unique_ptr<Range> RemoveRange(Range* r);
  // Caller holds fs_->mu. The range holding addr, or null.
  Range* FindLocked(uint64_t addr) const;
  // Without WP_UNPOPULATED the kernel cannot write-protect an empty pte, so
  // map every page first by reading it (anonymous pages get the zero page).
  static void ReadFault(uint64_t start, uint64_t end);

  // The tracker thread's body: serves faults until the loop stops.
  void Run();
  void HandleWriteFault(uint64_t addr);
  // Records the first failure of the tracker thread (Collect reports it).
  void NoteThreadError(const Status& error, const char* op);
  // Marks in r->scratch the pages of r writable without a fault
  // (uffd_wp_collect.cc). `maps` is used without PAGEMAP_SCAN only.
  Status Sweep(Range* r, const std::vector<Vma>* maps);
  void CloseFds();

  Env* const env_;
  sys::Userfaultfd uffd_;
  // The tracker thread's loop. Its storage is its own mapping, never
  // tracked (CheckOwnMemory): serving a fault never writes tracked memory.
  std::unique_ptr<sys::UffdLoop> loop_;
  FaultState* fs_;
  std::optional<sys::PagemapScanner> scanner_;  // null: sweep by reading pagemap_fd_
  int pagemap_fd_;
  const bool wp_unpopulated_;
  const pid_t pid_;
  bool child_ = false;

  std::unique_ptr<std::thread> thread_;
  std::mutex start_mu_;
  std::condition_variable start_cv_;
  bool started_ = false;
  PageRange thread_stack_;  // set before Start() returns, then constant

  mutable std::mutex api_mu_;                   // serialises Track/Untrack/Collect
  std::vector<std::unique_ptr<Range>> ranges_;  // sorted; changed under api_mu_ + fs_->mu
  std::function<void(uint64_t)> hook_;          // fs_->mu
  TrackerStats stats_;                          // api_mu_
};

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_UFFD_WP_IMPL_H_
