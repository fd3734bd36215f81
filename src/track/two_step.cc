// Backend two-step: a deliberately NON-atomic tracker, kept as a negative
// control for `pagewise check --backend two-step` and `pagewise explore
// --variant two-step-tracker`. Never chosen automatically.
//
// It uses the same kernel machinery as uffd-wp-async (userfaultfd WP_ASYNC
// write-protection, PAGEMAP_SCAN reporting pages whose uffd-wp bit is clear)
// but in the order a soft-dirty pre-dump uses: read the dirty state, let the
// caller dump the pages, clear the state afterwards. Collect() first
// re-arms (UFFDIO_WRITEPROTECT) the pages the previous Collect() reported,
// then scans WITHOUT PM_SCAN_WP_MATCHING and reports what is written,
// leaving it armed-off until the next Collect(). A write that lands after
// the caller copied a reported page and before the next Collect() re-arms
// it is lost: the re-arm marks the page clean, and no scan ever sees the
// write. The atomic backends do the reading and the re-arming in one step
// per page (PM_SCAN_WP_MATCHING under the page-table lock).
//
// Memory: anonymous private memory, as uffd-wp-async. Memory events are
// not followed (no madvise interposition): this backend exists to lose
// writes, not to be used.
#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "base/pause_point.h"
#include "pagewise/tracker.h"
#include "sys/pagemap.h"
#include "sys/task.h"
#include "sys/userfaultfd.h"
#include "track/track_internal.h"

namespace pagewise::track_internal {
namespace {

class TwoStepTracker final : public Tracker {
 public:
  TwoStepTracker(Env* env, sys::Userfaultfd uffd, sys::PagemapScanner scanner)
      : env_(env), uffd_(std::move(uffd)), scanner_(std::move(scanner)), pid_(sys::ProcessId()) {}

  TrackBackend backend() const override { return TrackBackend::kTwoStep; }

  Status Track(void* addr, size_t len) override {
    PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Track"));
    PW_RETURN_IF_ERROR(CheckProcess("Track"));
    const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
    std::lock_guard<std::mutex> lock(mu_);
    PW_RETURN_IF_ERROR(CheckNoOverlap(ranges_, start, end));
    PW_ASSIGN_OR_RETURN(std::vector<Vma> vmas, CoveringVmas(env_, start, end, "Track"));
    Status s = uffd_.Register(start, len, sys::kRegisterWp);
    if (!s.ok()) return RegisterError(s, start, end, vmas, "two-step");
    s = uffd_.WriteProtect(start, len, /*wp=*/true);
    if (!s.ok()) {
      uffd_.Unregister(start, len).IgnoreError();  // undo; the original error matters
      return s.WithContext("Track " + RangeString(start, end) + ": write-protecting the range");
    }
    ranges_.push_back({start, end});
    std::sort(ranges_.begin(), ranges_.end(),
              [](const PageRange& a, const PageRange& b) { return a.start < b.start; });
    return Status::Ok();
  }

  Status Untrack(void* addr, size_t len) override {
    PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Untrack"));
    PW_RETURN_IF_ERROR(CheckProcess("Untrack"));
    const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find(ranges_.begin(), ranges_.end(), PageRange{start, end});
    if (it == ranges_.end()) return NotTracked(start, end, ranges_);
    Status s = uffd_.Unregister(start, len);
    // EINVAL/ENOMEM: the memory is gone or replaced (as uffd-wp-async).
    if (!s.ok() && s.err() != EINVAL && s.err() != ENOMEM) {
      return s.WithContext("Untrack " + RangeString(start, end));
    }
    ranges_.erase(it);
    std::vector<PageRange> keep;
    for (const PageRange& p : pending_) {
      if (p.end <= start || p.start >= end) keep.push_back(p);
    }
    pending_.swap(keep);
    return Status::Ok();
  }

  Status Collect(std::vector<PageRange>* written) override {
    PW_RETURN_IF_ERROR(CheckProcess("Collect"));
    std::lock_guard<std::mutex> lock(mu_);
    // Step 2 of the previous collect: clear what it reported (the caller
    // has dumped those pages by now). THIS is where writes are lost.
    PW_PAUSE_POINT("track.two_step.rearm");
    for (const PageRange& p : pending_) {
      Status s = uffd_.WriteProtect(p.start, p.end - p.start, /*wp=*/true);
      if (!s.ok()) return s.WithContext("Collect: re-arming " + RangeString(p.start, p.end));
    }
    pending_.clear();
    // Step 1: read the written state without touching it.
    PW_PAUSE_POINT("track.two_step.scan");
    const size_t from = written->size();
    for (const PageRange& r : ranges_) {
      PagemapScanArgs args;
      args.start = r.start;
      args.end = r.end;
      args.category_mask = sys::page_is::kWritten;
      args.return_mask = sys::page_is::kWritten;
      std::vector<PageRegion> regions;
      Status s = scanner_.ScanAll(args, &regions);
      if (!s.ok()) return s.WithContext("Collect " + RangeString(r.start, r.end));
      for (const PageRegion& reg : regions) {
        AppendRange(written, reg.start, reg.end);
        AppendRange(&pending_, reg.start, reg.end);
      }
    }
    SortAndCoalesce(written, from);
    stats_.collects++;
    for (size_t i = from; i < written->size(); ++i) {
      stats_.pages_reported += (*written)[i].pages(PageSize());
    }
    return Status::Ok();
  }

  TrackerStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  std::vector<PageRange> tracked() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }

 private:
  Status CheckProcess(const char* op) const {
    if (sys::ProcessId() == pid_) return Status::Ok();
    return Status::FailedPrecondition(std::string(op) +
                                      ": this tracker belongs to the parent process; a forked "
                                      "child is not tracked (create a new Tracker in the child)");
  }

  Env* const env_;
  sys::Userfaultfd uffd_;
  sys::PagemapScanner scanner_;
  const pid_t pid_;

  mutable std::mutex mu_;  // guards everything below; serialises the API
  std::vector<PageRange> ranges_;
  std::vector<PageRange> pending_;  // reported by the last collect, not yet re-armed
  TrackerStats stats_;
};

}  // namespace

Result<std::unique_ptr<Tracker>> CreateTwoStep(Env* env, const KernelFeatures& features) {
  using namespace uffd_feature;
  PW_RETURN_IF_ERROR(RequireUffd(features, kPagefaultFlagWp | kWpAsync | kWpUnpopulated,
                                 "tracking backend two-step"));
  PW_RETURN_IF_ERROR(RequirePagemapScan(features, "tracking backend two-step"));
  sys::Userfaultfd::Options o;
  o.required_features = kPagefaultFlagWp | kWpAsync | kWpUnpopulated;
  o.env = env;
  PW_ASSIGN_OR_RETURN(sys::Userfaultfd uffd, sys::Userfaultfd::Open(o));
  PW_ASSIGN_OR_RETURN(sys::PagemapScanner scanner, sys::PagemapScanner::Open(env, 0));
  return std::unique_ptr<Tracker>(new TwoStepTracker(env, std::move(uffd), std::move(scanner)));
}

}  // namespace pagewise::track_internal
