// Tracker mode of the live snapshot (LiveSnapshotOptions::tracker): the
// regions are tracked by a uffd-wp Tracker, whose Collect() is T and whose
// fault hook saves each page before its first write after T.
//
// Telling pre-T from post-T hook calls. The hook runs on the tracker thread
// under the tracker's fault lock, and Collect() exchanges the written bits
// and re-protects the written pages under the same lock, so every hook call
// is either before or after T in that lock's order. But the hook must be
// installed before Collect() (a post-T fault may come the moment Collect
// releases the lock), and a hook call before T must not save its page: the
// faulting write lands before T and belongs in the image. The hook cannot
// ask the tracker (it holds the tracker's lock). So a sentinel page is
// tracked too and written once before Collect(): the tracker unprotects it
// on that write, and only Collect() (under the lock) protects it again. The
// hook reads the sentinel's write-protect bit (PAGEMAP_SCAN): unprotected
// means "before T", protected means "T has passed". After the first post-T
// call (or once Collect() returned) the hook stops checking.
#include <sys/mman.h>

#include "live/live_snapshot_impl.h"
#include "sys/pagemap.h"
#include "track/uffd_wp_tracker.h"

namespace pagewise::live {

// State shared by the snapshot and the hook it installs on the tracker.
struct TrackerHookState {
  std::shared_ptr<LiveCore> core;
  uint64_t sentinel = 0;
  sys::PagemapScanner scanner;
  std::atomic<bool> after_t{false};

  // True if the sentinel page is write-protected now (T has passed).
  Result<bool> SentinelProtected() const {
    PagemapScanArgs a;
    a.start = sentinel;
    a.end = sentinel + PageSize();
    // WRITTEN: the pte is not uffd write-protected.
    a.category_mask = sys::page_is::kWritten;
    a.return_mask = sys::page_is::kWritten;
    PageRegion out[1];
    PW_ASSIGN_OR_RETURN(PagemapScanOut r, scanner.ScanOnce(a, out, 1));
    return r.regions == 0;
  }

  // The fault hook (tracker thread, tracker's fault lock held).
  void OnFault(uint64_t page) {
    if (core->Find(page) == nullptr || core->aborted()) return;
    if (!after_t.load(std::memory_order_acquire)) {
      Result<bool> passed = SentinelProtected();
      if (!passed.ok()) {
        // Cannot tell whether this write is before or after T: the image
        // could be wrong either way, so the snapshot fails.
        core->Fail(passed.status().WithContext("fault hook: checking the sentinel page"));
        return;
      }
      if (!*passed) return;  // before T: the write belongs in the image
      after_t.store(true, std::memory_order_release);
    }
    const uint64_t t0 = NowNs();
    core->CountFault();
    // One page only: the tracker must see every first write after T, so a
    // neighbour saved here would still fault (and find itself saved).
    FaultOutcome o = core->SaveForFault(page, /*wait_for_saver=*/true);
    if (o == FaultOutcome::kSaved || o == FaultOutcome::kAlreadySaved) {
      core->RecordService(NowNs() - t0);
    }
  }
};

namespace {

// True if [start, start+len) lies inside the union of `tracked` (sorted).
bool Covered(const std::vector<PageRange>& tracked, uint64_t start, uint64_t len) {
  uint64_t at = start;
  const uint64_t end = start + len;
  for (const PageRange& r : tracked) {
    if (r.end <= at) continue;
    if (r.start > at) return false;
    at = r.end;
    if (at >= end) return true;
  }
  return at >= end;
}

}  // namespace

Status LiveSnapshotImpl::BeginTracker() {
  uffd_tracker_ = dynamic_cast<UffdWpTracker*>(opts_.tracker);
  if (uffd_tracker_ == nullptr) {
    return Status::InvalidArgument(
        "live snapshot: tracker mode needs a tracker with the uffd-wp backend (it has " +
        std::string(BackendName(opts_.tracker->backend())) +
        "); create it with TrackerOptions{.backend = TrackBackend::kUffdWp}");
  }
  const std::vector<PageRange> tracked = opts_.tracker->tracked();
  for (const LiveRegion& r : core_->regions()) {
    if (!Covered(tracked, r.start, r.length)) {
      return Status::InvalidArgument("live snapshot: region '" + r.name +
                                     "' is not (entirely) tracked by the tracker; Track() it "
                                     "first or snapshot without the tracker");
    }
  }

  auto state = std::make_shared<TrackerHookState>();
  state->core = core_;
  Result<sys::PagemapScanner> scanner = sys::PagemapScanner::Open(env_);
  if (!scanner.ok()) return scanner.status().WithContext("live snapshot: opening the pagemap");
  state->scanner = std::move(scanner).value();
  Result<void*> mem =
      env_->Mmap(nullptr, page_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (!mem.ok()) return mem.status().WithContext("live snapshot: mapping the sentinel page");
  sentinel_ = reinterpret_cast<uint64_t>(*mem);
  state->sentinel = sentinel_;
  Status s = opts_.tracker->Track(*mem, page_size_);
  if (!s.ok()) {
    EndTracker();
    return s.WithContext("live snapshot: tracking the sentinel page");
  }
  sentinel_tracked_ = true;
  // The tracker write-protected the sentinel; this write faults, and the
  // tracker records it and unprotects the page.
  *static_cast<volatile char*>(*mem) = 1;

  uffd_tracker_->SetFaultHook([state](uint64_t page) { state->OnFault(page); });
  hook_state_ = state;
  hook_installed_ = true;

  // T. What Collect() reports (writes since the previous collect) is
  // superseded by the full image; the next Collect() reports writes since T.
  std::vector<PageRange> ignored;
  s = opts_.tracker->Collect(&ignored);
  if (s.ok()) {
    Result<bool> passed = state->SentinelProtected();
    if (!passed.ok()) {
      s = passed.status().WithContext("checking the sentinel page after Collect");
    } else if (!*passed) {
      s = Status::Internal("the tracker's Collect() did not re-protect the written sentinel page");
    }
  }
  if (!s.ok()) {
    core_->Fail(s);
    EndTracker();
    return s.WithContext("live snapshot: collecting the tracker at the snapshot instant");
  }
  state->after_t.store(true, std::memory_order_release);
  return Status::Ok();
}

void LiveSnapshotImpl::EndTracker() {
  if (hook_installed_) {
    // Waits for a hook call in progress (the tracker's fault lock). No call
    // can be blocked on us: on success every page is saved, on failure the
    // core was aborted (queue and claims released) before we got here.
    uffd_tracker_->SetFaultHook(nullptr);
    hook_installed_ = false;
  }
  hook_state_.reset();
  if (sentinel_tracked_) {
    // Our own page, tracked by us: nothing the caller could act on if this
    // failed, and the page is unmapped next (Untrack of unmapped memory is
    // fine for the tracker).
    opts_.tracker->Untrack(reinterpret_cast<void*>(sentinel_), page_size_).IgnoreError();
    sentinel_tracked_ = false;
  }
  if (sentinel_ != 0) {
    env_->Munmap(reinterpret_cast<void*>(sentinel_), page_size_)
        .IgnoreError();  // ours; best effort
    sentinel_ = 0;
  }
}

}  // namespace pagewise::live
