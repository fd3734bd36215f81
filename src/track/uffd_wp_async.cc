// Backend uffd-wp-async: userfaultfd write-protection with WP_ASYNC (the
// kernel resolves write faults itself by clearing the pte's uffd-wp bit) and
// PAGEMAP_SCAN with PM_SCAN_WP_MATCHING, which reports the pages whose bit is
// clear ("written") and sets it again under the page-table lock, atomically
// per page.
//
// Memory events, as measured on Linux 6.18 (tests in tracker_test.cc):
//   - MADV_DONTNEED on anonymous memory drops the ptes together with their
//     uffd-wp markers. PAGEMAP_SCAN's fast path (category_mask ==
//     return_mask == PAGE_IS_WRITTEN, no anyof/inverted bits) reports such an
//     empty pte as written and installs a marker again; a whole zapped page
//     table (a pte hole) is reported written and re-armed too. So anonymous
//     DONTNEED needs no help from us, as long as we stay on the fast path.
//   - MADV_REMOVE on shmem punches the page out of the file, but the kernel
//     installs a uffd-wp marker in place of a write-protected pte, so a clean
//     page whose content became zero is NOT reported; likewise MADV_DONTNEED
//     on private hugetlbfs or a private file mapping (the page reverts to
//     zero or to the file's content). Such mappings are registered on a
//     second userfaultfd with UFFD_FEATURE_EVENT_REMOVE (drop_events.h): the
//     kernel reports every such madvise, raw system calls included, with or
//     without libpagewise-interpose. Anonymous private memory stays on the
//     plain userfaultfd (no event round trip on its madvise calls).
//   - munmap: no VMA, nothing reported; mremap: the moved VMA loses its
//     registration (no UFFD_FEATURE_EVENT_REMAP), the old range is unmapped.
//     If other memory is mapped at a tracked address, Collect reports it
//     (kFailedPrecondition) after collecting the still registered parts (see
//     ScanRange for why not PM_SCAN_CHECK_WPASYNC).
//   - fork: the child's VMAs lose the registration (no EVENT_FORK) and its
//     ptes lose the uffd-wp bit; the parent's COW write faults clear the bit
//     like any write, so the parent's tracking is unaffected.
//   - mprotect: uffd-wp bits live in the ptes and survive protection changes.
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/pause_point.h"
#include "pagewise/tracker.h"
#include "sys/pagemap.h"
#include "sys/process.h"
#include "sys/userfaultfd.h"
#include "track/drop_events.h"
#include "track/quiesced_rearm.h"
#include "track/track_internal.h"

namespace pagewise::track_internal {
namespace {

class UffdWpAsyncTracker final : public Tracker, public QuiescedRearm {
 public:
  UffdWpAsyncTracker(Env* env, sys::Userfaultfd uffd, sys::PagemapScanner scanner)
      : env_(env), uffd_(std::move(uffd)), scanner_(std::move(scanner)), pid_(sys::SelfPid()) {}

  ~UffdWpAsyncTracker() override {
    if (sys::SelfPid() != pid_) return;  // a forked child must not touch the parent's registration
    std::lock_guard<std::mutex> lock(mu_);
    for (const PageRange& r : ranges_) {
      // Closing the uffd unregisters everything anyway; this is tidiness.
      UffdOf(r.start).Unregister(r.start, r.end - r.start).IgnoreError();
    }
  }

  TrackBackend backend() const override { return TrackBackend::kUffdWpAsync; }

  Status Track(void* addr, size_t len) override {
    PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Track"));
    PW_RETURN_IF_ERROR(CheckProcess("Track"));
    const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
    std::lock_guard<std::mutex> lock(mu_);
    PW_RETURN_IF_ERROR(CheckNoOverlap(ranges_, start, end));
    PW_ASSIGN_OR_RETURN(std::vector<Vma> vmas, CoveringVmas(env_, start, end, "Track"));
    PW_RETURN_IF_ERROR(
        TrackPageSize(env_, vmas, start, end, /*hugetlb_ok=*/true, "uffd-wp-async").status());
    // Memory whose drops leave uffd-wp markers goes on the drop-events
    // userfaultfd (see the header comment); one VMA of that kind is enough.
    const bool hidden_drops =
        std::any_of(vmas.begin(), vmas.end(), [](const Vma& v) { return !v.anonymous_private(); });
    if (hidden_drops && drops_ == nullptr) {
      PW_ASSIGN_OR_RETURN(
          drops_, DropEvents::Start(env_, [this](uint64_t s, uint64_t e) { OnDropped(s, e); }));
    }
    const sys::Userfaultfd& uffd = hidden_drops ? drops_->uffd() : uffd_;
    Status s = uffd.Register(start, len, sys::kRegisterWp);
    if (!s.ok()) return RegisterError(s, start, end, vmas, "uffd-wp-async");
    // Write-protect everything: with WP_UNPOPULATED this also installs
    // markers on never-touched ptes, so the first collect reports only pages
    // written from now on.
    s = hidden_drops ? drops_->WriteProtect(start, len) : uffd_.WriteProtect(start, len, true);
    if (!s.ok()) {
      uffd.Unregister(start, len).IgnoreError();  // undo; the original error matters
      return s.WithContext("Track " + RangeString(start, end) + ": write-protecting the range");
    }
    InsertSorted(&ranges_, {start, end});
    if (hidden_drops) InsertSorted(&event_ranges_, {start, end});
    Republish(start, end);  // publishes the new range to OnDropped
    return Status::Ok();
  }

  Status Untrack(void* addr, size_t len) override {
    PW_RETURN_IF_ERROR(CheckRangeArgs(addr, len, "Untrack"));
    PW_RETURN_IF_ERROR(CheckProcess("Untrack"));
    const uint64_t start = reinterpret_cast<uint64_t>(addr), end = start + len;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = FindExact(&ranges_, start, end);
    if (it == ranges_.end()) return NotTracked(start, end, ranges_);
    Status s = UffdOf(start).Unregister(start, len);
    // UFFDIO_UNREGISTER fails with EINVAL when a VMA in the range cannot be
    // registered (the memory we registered was unmapped and something else,
    // e.g. a file mapping, now sits there) or no VMA is left. Either way our
    // memory is gone, which the contract allows.
    if (!s.ok() && (s.err() == EINVAL || s.err() == ENOMEM)) s = Status::Ok();
    if (!s.ok()) return s.WithContext("Untrack " + RangeString(start, end));
    ranges_.erase(it);
    auto ev = FindExact(&event_ranges_, start, end);
    if (ev != event_ranges_.end()) event_ranges_.erase(ev);
    Republish(start, end);
    return Status::Ok();
  }

  Status Collect(std::vector<PageRange>* written) override {
    PW_RETURN_IF_ERROR(CheckProcess("Collect"));
    std::lock_guard<std::mutex> lock(mu_);
    const size_t from = written->size();
    Status first_error;
    // Every drop whose madvise returned before this collect began is in
    // dropped_ once Sync() returns (drop_events.h, "Ordering").
    if (drops_ != nullptr) first_error = drops_->Sync().WithContext("Collect");
    for (const PageRange& r : ranges_) {
      Status s = ScanRange(r, written);
      if (!s.ok() && first_error.ok()) first_error = s;
    }
    TakeDropped(written, &first_error);
    Account(written, from);
    return first_error;
  }

  // QuiescedRearm. Correct only because the caller's writers are quiesced
  // from here until Rearm() returns (see quiesced_rearm.h): the scan below
  // reads the written state without re-arming it.
  Status PeekWritten(std::vector<PageRange>* written) override {
    PW_RETURN_IF_ERROR(CheckProcess("Rewind"));
    std::lock_guard<std::mutex> lock(mu_);
    const size_t from = written->size();
    // As in Collect: every drop whose madvise returned before now is in
    // dropped_ once Sync() returns.
    if (drops_ != nullptr) PW_RETURN_IF_ERROR(drops_->Sync().WithContext("Rewind"));
    for (size_t i = 0; i < ranges_.size(); ++i) {
      const PageRange& r = ranges_[i];
      // First: without WP_MATCHING the kernel walks unregistered VMAs too
      // and reports all their pages as written; the caller must never be
      // told to write into memory that is not the tracked mapping.
      PW_RETURN_IF_ERROR(CheckRegistered(r));
      PagemapScanArgs args;
      args.start = r.start;
      args.end = r.end;
      args.flags = 0;  // report only; the fast path (WRITTEN masks) as in ScanRange
      args.category_mask = sys::page_is::kWritten;
      args.return_mask = sys::page_is::kWritten;
      peek_regions_.clear();
      const uint64_t t0 = NowNs();
      Status s = scanner_.ScanAll(args, &peek_regions_);
      const uint64_t ns = NowNs() - t0;
      if (!s.ok()) return s.WithContext("Rewind: scanning " + RangeString(r.start, r.end));
      // A scan of the whole range costs about what this one did: the price
      // Rearm() weighs per-range write-protects against.
      if (scan_ns_.size() != ranges_.size()) scan_ns_.assign(ranges_.size(), 0);
      scan_ns_[i] = ns;
      for (const PageRegion& reg : peek_regions_) AppendRange(written, reg.start, reg.end);
    }
    Status first_error;
    TakeDropped(written, &first_error);
    Account(written, from);
    return first_error;
  }

  Status Rearm(const std::vector<PageRange>& ranges) override {
    PW_RETURN_IF_ERROR(CheckProcess("Rewind"));
    std::lock_guard<std::mutex> lock(mu_);
    size_t k = 0;
    for (size_t i = 0; i < ranges_.size() && k < ranges.size(); ++i) {
      const PageRange& r = ranges_[i];
      while (k < ranges.size() && ranges[k].end <= r.start) ++k;
      size_t e = k;
      while (e < ranges.size() && ranges[e].start < r.end) ++e;
      if (e == k) continue;
      if (PerRangeIsCheaper(i, e - k)) {
        const uint64_t t0 = NowNs();
        for (size_t j = k; j < e; ++j) {
          const uint64_t s = std::max(ranges[j].start, r.start);
          const uint64_t en = std::min(ranges[j].end, r.end);
          PW_RETURN_IF_ERROR(WriteProtectRange(s, en));
        }
        // Keep the per-range price current (moving average).
        const double per = static_cast<double>(NowNs() - t0) / static_cast<double>(e - k);
        wp_range_ns_ = 0.75 * wp_range_ns_ + 0.25 * per;
      } else {
        PW_RETURN_IF_ERROR(RearmWhole(r));
      }
      k = e;
    }
    return Status::Ok();
  }

  void SetRearmWay(RearmWay way) override {
    std::lock_guard<std::mutex> lock(mu_);
    rearm_way_ = way;
  }

  TrackerStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  std::vector<PageRange> tracked() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }

  // The drop-events sink: pages [start, end) were dropped by madvise (their
  // content is now zero or the file's). Called on the drop-events reader
  // thread (or inside DropEvents::Sync) before that madvise returns.
  void OnDropped(uint64_t start, uint64_t end) {
    if (sys::SelfPid() != pid_) return;
    std::lock_guard<std::mutex> lock(dropped_mu_);
    // Clip to tracked ranges under dropped_mu_ only: ranges_ is guarded by
    // mu_, which a Collect may hold while this thread waits; keep a copy of
    // the bounds published by Track/Untrack instead.
    for (const PageRange& r : published_) {
      uint64_t s = std::max(start, r.start), e = std::min(end, r.end);
      if (s < e) AppendRange(&dropped_, s, e);
    }
  }

 private:
  Status CheckProcess(const char* op) const {
    if (sys::SelfPid() == pid_) return Status::Ok();
    return Status::FailedPrecondition(std::string(op) +
                                      ": this tracker belongs to the parent process; a forked "
                                      "child is not tracked (create a new Tracker in the child)");
  }

  static void InsertSorted(std::vector<PageRange>* v, PageRange r) {
    auto it = std::lower_bound(v->begin(), v->end(), r.start,
                               [](const PageRange& a, uint64_t s) { return a.start < s; });
    v->insert(it, r);
  }

  // True if `addr` lies in a tracked range registered on drops_. mu_ held.
  bool OnDropsUffd(uint64_t addr) const {
    for (const PageRange& r : event_ranges_) {
      if (r.start <= addr && addr < r.end) return true;
    }
    return false;
  }

  // The userfaultfd the tracked range starting at `start` is registered on.
  const sys::Userfaultfd& UffdOf(uint64_t start) const {
    return OnDropsUffd(start) ? drops_->uffd() : uffd_;
  }

  static std::vector<PageRange>::iterator FindExact(std::vector<PageRange>* v, uint64_t start,
                                                    uint64_t end) {
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (it->start == start && it->end == end) return it;
    }
    return v->end();
  }

  // Keeps published_ (read by OnDropped) in step with ranges_, forgets
  // drops remembered for [start, end) (a range just tracked or untracked)
  // and the per-range scan times (indexed like ranges_). mu_ held.
  void Republish(uint64_t start, uint64_t end) {
    scan_ns_.clear();  // indexed like ranges_, which just changed
    std::lock_guard<std::mutex> dlock(dropped_mu_);
    published_ = ranges_;
    std::vector<PageRange> keep;
    for (const PageRange& d : dropped_) {
      if (d.end <= start || d.start >= end) keep.push_back(d);
    }
    dropped_.swap(keep);
  }

  // Collects and re-arms one tracked range, appending what it reported.
  //
  // Not PM_SCAN_CHECK_WPASYNC: with it, a VMA in the range that is not
  // registered (memory unmapped and mapped again) makes the ioctl fail with
  // EPERM after it has already re-armed and copied out the regions before
  // that VMA, and the error return hides how many: those writes would be
  // lost (measured on 6.18). Instead the WP_MATCHING scan skips unregistered
  // VMAs, and a second, cheap scan looks for them (registered VMAs are
  // skipped whole by the kernel, so it costs nothing in the normal case).
  Status ScanRange(const PageRange& r, std::vector<PageRange>* written) {
    PagemapScanArgs args;
    args.start = r.start;
    args.end = r.end;
    // Stay on the kernel's fast path (mask == return == WRITTEN only): it is
    // the one that reports and re-arms ptes emptied by MADV_DONTNEED.
    args.flags = sys::kScanWpMatching;
    args.category_mask = sys::page_is::kWritten;
    args.return_mask = sys::page_is::kWritten;
    std::vector<PageRegion> regions;
    PW_PAUSE_POINT("track.scan.before");
    Status s = scanner_.ScanAll(args, &regions);
    PW_PAUSE_POINT("track.scan.after");
    // Whatever was reported was also re-armed: hand it out even on error.
    for (const PageRegion& reg : regions) AppendRange(written, reg.start, reg.end);
    if (!s.ok()) return s.WithContext("Collect " + RangeString(r.start, r.end));
    return CheckRegistered(r);
  }

  // kFailedPrecondition if memory in the tracked range r is mapped but not
  // registered with our userfaultfd (see ScanRange).
  Status CheckRegistered(const PageRange& r) {
    PagemapScanArgs check;
    check.start = r.start;
    check.end = r.end;
    check.category_inverted = sys::page_is::kWpAllowed;
    check.category_mask = sys::page_is::kWpAllowed;
    check.return_mask = sys::page_is::kWpAllowed;
    check.max_pages = 1;
    std::vector<PageRegion> foreign;
    Status s = scanner_.ScanAll(check, &foreign, nullptr, 4);
    if (!s.ok())
      return s.WithContext("Collect " + RangeString(r.start, r.end) + ": checking registration");
    if (foreign.empty()) return Status::Ok();
    char where[40];
    snprintf(where, sizeof(where), "0x%" PRIx64, foreign[0].start);
    return Status(Code::kFailedPrecondition, 0,
                  "Collect " + RangeString(r.start, r.end) + ": memory at " + where +
                      " is mapped but no longer registered for tracking (it was unmapped and "
                      "mapped again, or replaced by mremap/mmap MAP_FIXED); writes there are not "
                      "tracked. Untrack the range and Track the new mapping");
  }

  // Appends the pages remembered from madvise drops since the last collect
  // (only what is still mapped: reading an unmapped page would crash the
  // caller). If /proc/self/maps cannot be read they are kept for the next
  // call and *first_error is set (if still OK).
  void TakeDropped(std::vector<PageRange>* written, Status* first_error) {
    std::vector<PageRange> dropped;
    {
      std::lock_guard<std::mutex> dlock(dropped_mu_);
      dropped.swap(dropped_);
    }
    if (dropped.empty()) return;
    Result<std::vector<Vma>> maps = ReadMaps(env_);
    if (maps.ok()) {
      ClipToMapped(*maps, &dropped);
      written->insert(written->end(), dropped.begin(), dropped.end());
      return;
    }
    std::lock_guard<std::mutex> dlock(dropped_mu_);  // keep them for the next collect
    for (const PageRange& d : dropped) AppendRange(&dropped_, d.start, d.end);
    SortAndCoalesce(&dropped_);
    if (first_error->ok()) *first_error = maps.status().WithContext("Collect");
  }

  // Sorts and coalesces (*written)[from..] and counts it in the stats.
  void Account(std::vector<PageRange>* written, size_t from) {
    SortAndCoalesce(written, from);
    stats_.collects++;
    for (size_t i = from; i < written->size(); ++i) {
      stats_.pages_reported += (*written)[i].pages(PageSize());
    }
  }

  // Rearm()'s choice for `n` ranges inside tracked range i: n per-range
  // write-protects at their measured price, or one scan of the range at
  // the price PeekWritten() just paid for scanning it. mu_ held.
  bool PerRangeIsCheaper(size_t i, size_t n) const {
    if (rearm_way_ != RearmWay::kCheapest) return rearm_way_ == RearmWay::kPerRange;
    if (i >= scan_ns_.size() || scan_ns_[i] == 0) return false;  // not measured: scan
    return static_cast<double>(n) * wp_range_ns_ < static_cast<double>(scan_ns_[i]);
  }

  // UFFDIO_WRITEPROTECT of [start, end). With WP_UNPOPULATED this also
  // puts markers on ptes emptied by MADV_DONTNEED. EAGAIN cannot come from
  // our own userfaultfd (it asks for no non-cooperative events) but is
  // retried like everywhere else: nothing was done.
  Status WriteProtectRange(uint64_t start, uint64_t end) {
    Status s;
    if (OnDropsUffd(start)) {
      // Registered on the drop-events userfaultfd: the kernel refuses the
      // plain one (ENOENT), and a pending REMOVE makes this EAGAIN, which
      // DropEvents::WriteProtect handles by reading the events first.
      s = drops_->WriteProtect(start, end - start);
    } else {
      for (int attempt = 0; attempt < 100; ++attempt) {
        s = uffd_.WriteProtect(start, end - start, /*wp=*/true);
        if (s.code() != Code::kRetry) break;
      }
    }
    if (!s.ok()) return s.WithContext("Rewind: re-arming " + RangeString(start, end));
    return s;
  }

  // One PAGEMAP_SCAN with WP_MATCHING and no output vector over r: the
  // kernel write-protects every pte of r that is not (markers on empty
  // ptes and page-table holes included) and reports nothing.
  Status RearmWhole(const PageRange& r) {
    PagemapScanArgs args;
    args.start = r.start;
    args.end = r.end;
    args.flags = sys::kScanWpMatching;
    args.category_mask = sys::page_is::kWritten;
    args.return_mask = sys::page_is::kWritten;
    while (args.start < args.end) {
      Result<PagemapScanOut> out = scanner_.ScanOnce(args, nullptr, 0);
      if (!out.ok()) {
        return out.status().WithContext("Rewind: re-arming " + RangeString(r.start, r.end));
      }
      if (out->walk_end <= args.start) {
        return Status::Internal("Rewind: PAGEMAP_SCAN made no progress re-arming " +
                                RangeString(r.start, r.end));
      }
      args.start = out->walk_end;
    }
    return Status::Ok();
  }

  Env* const env_;
  sys::Userfaultfd uffd_;
  sys::PagemapScanner scanner_;
  const pid_t pid_;

  mutable std::mutex mu_;  // guards ranges_, event_ranges_, drops_, stats_; serialises the API
  std::vector<PageRange> ranges_;
  std::vector<PageRange> event_ranges_;  // the part of ranges_ registered on drops_
  TrackerStats stats_;
  // QuiescedRearm state (guarded by mu_): the last PeekWritten() scan time
  // per tracked range, the measured price of one per-range write-protect
  // (a first guess until measured), and the scan's output buffer.
  std::vector<uint64_t> scan_ns_;
  double wp_range_ns_ = 1000;
  std::vector<PageRegion> peek_regions_;
  RearmWay rearm_way_ = RearmWay::kCheapest;

  std::mutex dropped_mu_;             // guards published_, dropped_
  std::vector<PageRange> published_;  // copy of ranges_ for OnDropped
  std::vector<PageRange> dropped_;    // pages dropped by madvise since the last collect
  // Created by the first Track of memory that needs it. Declared last: it is
  // destroyed first, so its reader thread (which calls OnDropped) is joined
  // before the members OnDropped uses go away.
  std::unique_ptr<DropEvents> drops_;
};

}  // namespace

Result<std::unique_ptr<Tracker>> CreateUffdWpAsync(Env* env, const KernelFeatures& features) {
  using namespace uffd_feature;
  PW_RETURN_IF_ERROR(RequireUffd(features, kPagefaultFlagWp | kWpAsync | kWpUnpopulated,
                                 "tracking backend uffd-wp-async"));
  PW_RETURN_IF_ERROR(RequirePagemapScan(features, "tracking backend uffd-wp-async"));
  sys::Userfaultfd::Options o;
  o.required_features = kPagefaultFlagWp | kWpAsync | kWpUnpopulated;
  o.optional_features = kWpHugetlbfsShmem;  // shmem/hugetlbfs write-protect
  o.env = env;
  PW_ASSIGN_OR_RETURN(sys::Userfaultfd uffd, sys::Userfaultfd::Open(o));
  PW_ASSIGN_OR_RETURN(sys::PagemapScanner scanner, sys::PagemapScanner::Open(env, 0));
  return std::unique_ptr<Tracker>(new UffdWpAsyncTracker(env, std::move(uffd), std::move(scanner)));
}

}  // namespace pagewise::track_internal
