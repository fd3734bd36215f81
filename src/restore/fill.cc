// Engine filling: serving one fault on the loop thread (demand first, then
// stream read-ahead), reading the source for a run, and the background
// filler thread. How pages are installed is the Installer's
// (engine_install.cc); what to fill next is the Scheduler's.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/bytes.h"
#include "base/pause_point.h"
#include "restore/engine.h"

namespace pagewise::restore {
namespace {

// Background pieces shrink to this while reads keep waiting for them.
constexpr size_t kMinPiecePages = 8;
// Pages read from the source at a time (64 KiB of 4 KiB pages: one image
// chunk).
constexpr size_t kReadPages = 16;

}  // namespace

bool Engine::FillRun(Space& s, const Run& run, FillKind kind, FillScratch* scratch, size_t first,
                     int who, size_t max_piece, bool yield_to_reads) {
  // The source is read (and installed) in slices of at most kReadPages, so
  // that a filler's buffer stays small (a server runs one engine per
  // client) and the first slice is in place before the next is read. The
  // slice holding `first` goes first.
  if (run.pages <= kReadPages) {
    return FillSlice(s, run, kind, scratch, first, who, max_piece, yield_to_reads);
  }
  auto slice = [&](size_t k) {
    Run r = run;
    r.addr += k * kReadPages * page_size_;
    r.src += k * kReadPages * page_size_;
    r.pages = std::min(kReadPages, run.pages - k * kReadPages);
    return r;
  };
  const size_t slices = (run.pages + kReadPages - 1) / kReadPages;
  const size_t lead = std::min(first, run.pages - 1) / kReadPages;
  bool waited = FillSlice(s, slice(lead), kind, scratch, first - lead * kReadPages, who, max_piece,
                          yield_to_reads);
  for (size_t k = 0; k < slices; ++k) {
    if (k == lead || stopping()) continue;
    waited |= FillSlice(s, slice(k), kind, scratch, 0, who, max_piece, yield_to_reads);
  }
  return waited;
}

bool Engine::FillSlice(Space& s, const Run& run, FillKind kind, FillScratch* scratch, size_t first,
                       int who, size_t max_piece, bool yield_to_reads) {
  const size_t ps = page_size_;
  const size_t bytes = run.pages * ps;
  const Clock::time_point t0 = Clock::now();
  std::vector<uint8_t>& zero = scratch->zero;
  zero.assign(run.pages, 0);
  Status st;
  if (opt_.fill.use_zeropage && source_->can_classify()) {
    st = source_->ClassifyZero(run.src, run.pages, ps, &zero);
  }
  const char* data = static_cast<const char*>(source_->Direct(run.src, bytes));
  const bool all_zero = std::all_of(zero.begin(), zero.end(), [](uint8_t z) { return z != 0; });
  if (st.ok() && data == nullptr && !all_zero) {
    scratch->data.resize(bytes);
    const ReadPriority priority = kind == FillKind::kDemand     ? ReadPriority::kDemand
                                  : kind == FillKind::kPrefetch ? ReadPriority::kPrefetch
                                                                : ReadPriority::kBackground;
    st = source_->ReadWithPriority(run.src, scratch->data.data(), bytes, priority);
    data = scratch->data.data();
  }
  if (st.ok() && opt_.fill.use_zeropage && !source_->can_classify()) {
    for (size_t i = 0; i < run.pages; ++i) zero[i] = IsAllZero(data + i * ps, ps) ? 1 : 0;
  }
  if (!st.ok()) {
    // The source cannot give these pages. They must never read as zero:
    // mark them bad, so that a fault on them is poisoned (SIGBUS).
    installer_.MarkBad(s, run);
    Fail(st.WithContext("reading the restore source at offset " + std::to_string(run.src)));
    return false;
  }
  const bool waited =
      installer_.Install(s, run, data, zero.data(), kind, who, first, max_piece, yield_to_reads);
  stats_.AddFillNs(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
  return waited;
}

// The loop over attempts keeps every way a fault can be resolved (filled
// from the source, waited for while in flight, zero page, poison, wake) in
// one place, with the events that may change the answer in between.
void Engine::ServeFault(Space& s, const QueuedFault& f) {
  const size_t ps = page_size_;
  const uint64_t page = f.event.address & ~static_cast<uint64_t>(ps - 1);
  if (f.event.flags & (UffdEvent::kFlagWp | UffdEvent::kFlagMinor)) {
    // Write-protect and minor faults belong to modes a client may have
    // registered for its own purposes; we only serve missing pages.
    stats_.Add(&RestoreStats::unknown_events);
    return;
  }
  bool counted = false;  // a demand fault (source data needed) was counted
  bool waited = false;   // we waited for another filler's piece
  FaultClass cls = FaultClass::kZero;
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::unique_lock<std::mutex> lock(s.mu);
    if (s.closed.load() || !s.uffd.valid()) return;
    const SpaceMap::Lookup l = s.map.Find(page);
    const bool on_list = l.found && prefetch_set_.count(l.src) > 0;
    if (l.found && l.state == PageState::kUnfilled && s.InFlightOverlaps(page, 1, ps)) {
      // The filler is installing this page right now: its ioctl wakes the
      // thread. Wait for it (one piece), then look again.
      waited = true;
      s.inflight_done.wait(lock,
                           [&] { return s.closed.load() || !s.InFlightOverlaps(page, 1, ps); });
      continue;
    }
    if (l.found && l.state == PageState::kUnfilled) {
      const Run run = sched_.DemandRun(s.map, page);
      lock.unlock();
      if (!counted) {
        counted = true;
        cls = on_list ? FaultClass::kLatePrefetch : FaultClass::kDemand;
        stats_.DemandFault(f.read_at, l.src, run, on_list);
      }
      FillRun(s, run, FillKind::kDemand, &demand_scratch_, (page - run.addr) / ps, kDemandFiller,
              run.pages, false);
      lock.lock();
      const SpaceMap::Lookup after = s.map.Find(page);
      if (after.found && (after.state == PageState::kUnfilled || after.state == PageState::kBad)) {
        continue;  // raced with an event or the source failed: look again
      }
      const Run ahead = sched_.AfterDemand(s.map, s.sched, run);
      lock.unlock();
      stats_.FaultResolved(cls, f.read_at, Clock::now());
      if (ahead.pages > 0) {
        // A sequential stream: bring in what it reads next, in window-sized
        // pieces (each wakes whoever already waits in it).
        stats_.TraceRun(f.read_at, ahead);
        FillRun(s, ahead, FillKind::kReadahead, &demand_scratch_, 0, kDemandFiller, sched_.window(),
                false);
        std::lock_guard<std::mutex> lk(s.mu);
        sched_.AfterReadahead(s.sched, ahead);
      }
      return;
    }
    if (waited && l.found && l.state == PageState::kFilled) {
      // The piece we waited for installed the page (and woke the thread).
      lock.unlock();
      stats_.Add(&RestoreStats::other_faults);
      stats_.FaultResolved(on_list ? FaultClass::kPrefetchHit : FaultClass::kDemand, f.read_at,
                           Clock::now());
      return;
    }
    lock.unlock();
    bool again;
    if (l.found && l.state == PageState::kBad) {
      again = installer_.Poison(s, page, GateUse::kTakeShared);
    } else {
      // Not a page we fill from the source:
      //  - kDropped: the program dropped it (MADV_DONTNEED): zeros;
      //  - not ours (mremap growth, MREMAP_DONTUNMAP's old range, memory we
      //    never restored): a fresh anonymous page is zero;
      //  - kFilled: resolved before we read the message (ZEROPAGE then says
      //    EEXIST and we wake the thread), or zapped without a REMOVE event
      //    (a client without EVENT_REMOVE): zero is what it would read;
      //  - kGone: no mapping; ZEROPAGE fails with ENOENT and we wake.
      again = installer_.ZeroOrWake(s, page);
    }
    if (!again) {
      if (!counted) stats_.Add(&RestoreStats::other_faults);
      const bool hit = on_list && l.state == PageState::kFilled;
      stats_.FaultResolved(counted ? cls : (hit ? FaultClass::kPrefetchHit : FaultClass::kZero),
                           f.read_at, Clock::now());
      return;
    }
  }
  // The map kept changing under this fault: wake the thread; if the page is
  // still missing it faults again and we see a fresh message.
  FillHold hold(s.gate);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.uffd.valid()) s.uffd.Wake(page, ps).IgnoreError();  // best effort
}

bool Engine::FillOnce() {
  last_fill_prefetch_ = false;
  std::vector<SpacePtr> spaces = SnapshotSpaces();
  if (spaces.empty()) return false;
  for (size_t k = 0; k < spaces.size(); ++k) {
    Space& s = *spaces[(filler_rr_ + k) % spaces.size()];
    std::vector<Run> runs;
    FillKind kind = FillKind::kBackground;
    uint64_t waste = 0;
    {
      std::lock_guard<std::mutex> lk(s.mu);
      if (s.closed.load() || !s.uffd.valid() || s.map.unfilled() == 0) continue;
      runs = sched_.PlanBackground(s.map, s.sched, background_on_.load(), &kind, &waste);
    }
    if (waste > 0) stats_.Add(&RestoreStats::prefetch_waste_entries, waste);
    if (runs.empty()) continue;  // e.g. prefetch done, background fill off: idle
    filler_rr_ = (filler_rr_ + k + 1) % spaces.size();
    for (const Run& r : runs) {
      const bool waited =
          FillRun(s, r, kind, &fill_scratch_, 0, kBackgroundFiller, piece_pages_, true);
      // Adapt the ioctl size: halve it while fault reads keep waiting for
      // our pieces, grow it back after a few calm batches.
      if (waited) {
        piece_pages_ = std::max(kMinPiecePages, piece_pages_ / 2);
        calm_pieces_ = 0;
      } else if (++calm_pieces_ >= 8) {
        piece_pages_ = std::min(sched_.batch(), piece_pages_ * 2);
        calm_pieces_ = 0;
      }
    }
    last_fill_prefetch_ = kind == FillKind::kPrefetch;
    return true;
  }
  return false;
}

void Engine::FillerLoop() {
  PW_PAUSE_POINT("engine.filler.start");  // pagewise explore (base/pause_point.h)
  for (;;) {
    fork_.ParkFiller();
    uint64_t epoch;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      epoch = work_epoch_;
    }
    const bool did = FillOnce();
    if (!last_fill_prefetch_) {
      // The filler plans prefetch runs first; a plan without any means the
      // whole prefetch list was installed (or nothing is left to fill).
      bool first = false;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!prefetch_done_) {
          prefetch_done_ = true;
          first = true;
          cv_.notify_all();
        }
      }
      if (first && !opt_.fill.prefetch.empty() && opt_.on_prefetched) opt_.on_prefetched();
    }
    MaybeReportResident();
    if (!did) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || work_epoch_ != epoch || fork_.active(); });
    }
  }
}

}  // namespace pagewise::restore
