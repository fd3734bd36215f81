// Checkpoint: a sparse saved copy plus a Tracker; Rewind puts back only the
// pages the tracker reports written.
#include "pagewise/checkpoint.h"

#include <sys/mman.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "base/page_ranges.h"
#include "snapshot/internal.h"
#include "snapshot/snapshot_env.h"
#include "track/quiesced_rearm.h"
#include "track/tracker_env.h"

namespace pagewise {
namespace {

using snapshot_internal::Intersect;
using snapshot_internal::Piece;

// The saved contents of one region: an anonymous mapping holding the
// non-zero pages, and a bit per page saying which pages those are.
struct Saved {
  Region info;
  char* copy = nullptr;
  std::vector<uint64_t> nonzero;
  Env* env = nullptr;

  ~Saved() {
    if (copy != nullptr) env->Munmap(copy, info.length).IgnoreError();  // nowhere to report
  }
  bool test(uint64_t i) const { return (nonzero[i / 64] >> (i % 64)) & 1; }
  void set(uint64_t i, bool v) {
    if (v) {
      nonzero[i / 64] |= uint64_t{1} << (i % 64);
    } else {
      nonzero[i / 64] &= ~(uint64_t{1} << (i % 64));
    }
  }
  char* live() const { return reinterpret_cast<char*>(info.address); }
};

class CheckpointImpl final : public Checkpoint {
 public:
  explicit CheckpointImpl(Env* env) : env_(env) {}
  ~CheckpointImpl() override {
    tracker_.reset();  // stop tracking before the saved copy goes
    saved_.clear();
  }

  Result<RewindStats> Rewind() override;
  Result<uint64_t> Update() override;
  CheckpointStats stats() const override { return stats_; }
  TrackBackend backend() const override { return tracker_->backend(); }
  const std::vector<Region>& regions() const override { return regions_; }

  // Create's work: saves the regions and starts tracking them.
  Status Init(const std::vector<Region>& regions, const CheckpointOptions& options);

 private:
  Status Apply(const std::vector<PageRange>& written, bool restore, RewindStats* stats);
  // The fast rewind. False, doing nothing, if the tracker does not offer it;
  // else *result is its outcome.
  bool RewindQuiesced(RewindStats* st, Status* result);
  RewindStats Finished(RewindStats st, uint64_t t0);

  Env* const env_;
  std::vector<Region> regions_;
  std::vector<std::unique_ptr<Saved>> saved_;  // one per region, same order
  std::unique_ptr<Tracker> tracker_;
  CheckpointStats stats_;
  // Pages the tracker reported (and re-armed) that a failed Rewind/Update
  // did not finish: fed into the next call.
  std::vector<PageRange> pending_;
  bool broken_update_ = false;
};

}  // namespace

Result<std::unique_ptr<Checkpoint>> Checkpoint::Create(const std::vector<Region>& regions,
                                                       const CheckpointOptions& options) {
  return CreateCheckpoint(regions, options, Env::Default());
}

Result<std::unique_ptr<Checkpoint>> CreateCheckpoint(const std::vector<Region>& regions,
                                                     const CheckpointOptions& options, Env* env) {
  PW_RETURN_IF_ERROR(snapshot_internal::ValidateRegions(regions, "Checkpoint"));
  auto cp = std::make_unique<CheckpointImpl>(env);
  PW_RETURN_IF_ERROR(cp->Init(regions, options));
  return std::unique_ptr<Checkpoint>(std::move(cp));
}

Status CheckpointImpl::Init(const std::vector<Region>& regions, const CheckpointOptions& options) {
  Env* const env = env_;
  const uint64_t page = PageSize();
  regions_ = regions;

  // Which pages hold data, asked before tracking starts (a tracker's
  // markers on empty ptes would make them look populated).
  std::vector<std::vector<PageRange>> populated(regions.size());
  std::optional<snapshot_internal::PresenceScanner> scanner;
  for (size_t k = 0; k < regions.size(); ++k) {
    const Region& r = regions[k];
    if (options.skip_unpopulated && r.kind == RegionKind::kAnonymous) {
      if (!scanner) scanner = snapshot_internal::PresenceScanner::Open(env);
      PW_RETURN_IF_ERROR(scanner->Populated(r.address, r.address + r.length, &populated[k]));
    } else {
      populated[k].push_back({r.address, r.address + r.length});
    }
  }

  TrackerOptions to;
  to.backend = options.backend;
  PW_ASSIGN_OR_RETURN(tracker_, CreateTracker(to, env));
  // Track before saving: with writers quiesced nothing changes in between,
  // and from here on every write is reported.
  for (const Region& r : regions) {
    Status s = tracker_->Track(reinterpret_cast<void*>(r.address), r.length);
    if (!s.ok()) return s.WithContext("Checkpoint: tracking region '" + r.name + "'");
  }

  for (size_t k = 0; k < regions.size(); ++k) {
    const Region& r = regions[k];
    auto saved = std::make_unique<Saved>();
    saved->info = r;
    saved->env = env;
    const uint64_t pages = r.length / page;
    saved->nonzero.assign((pages + 63) / 64, 0);
    Result<void*> m = env->Mmap(nullptr, r.length, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!m.ok()) {
      return m.status().WithContext("Checkpoint: mapping the saved copy of region '" + r.name +
                                    "' (" + std::to_string(r.length) + " bytes)");
    }
    saved->copy = static_cast<char*>(*m);

    for (const PageRange& pr : populated[k]) {
      for (uint64_t a = pr.start; a < pr.end; a += page) {
        const char* src = reinterpret_cast<const char*>(a);
        if (IsAllZero(src, page)) continue;
        const uint64_t i = (a - r.address) / page;
        std::memcpy(saved->copy + i * page, src, page);
        saved->set(i, true);
        ++stats_.saved_pages;
      }
    }
    stats_.region_pages += pages;
    saved_.push_back(std::move(saved));
  }
  return Status::Ok();
}

// Restore (rewind) or save (update) the pages of `written`.
Status CheckpointImpl::Apply(const std::vector<PageRange>& written, bool restore,
                             RewindStats* stats) {
  const uint64_t page = PageSize();
  const std::vector<Piece> pieces = Intersect(Coalesce(written), regions_);
  for (const Piece& p : pieces) {
    Saved& s = *saved_[p.region];
    const uint64_t first = p.offset / page, last = (p.offset + p.len) / page;
    uint64_t i = first;
    while (i < last) {
      if (restore) {
        // Runs of equal "non-zero at the checkpoint" state.
        const bool nz = s.test(i);
        uint64_t e = i + 1;
        while (e < last && s.test(e) == nz) ++e;
        char* live = s.live() + i * page;
        const uint64_t len = (e - i) * page;
        if (nz) {
          std::memcpy(live, s.copy + i * page, len);
          stats->pages_copied += e - i;
        } else if (s.info.kind == RegionKind::kAnonymous) {
          // Private anonymous memory reads as zero once dropped: cheaper than
          // writing zeros, and the page stops using memory.
          PW_RETURN_IF_ERROR(env_->Madvise(live, len, MADV_DONTNEED)
                                 .WithContext("Checkpoint::Rewind: dropping pages that were "
                                              "zero at the checkpoint"));
          stats->pages_zeroed += e - i;
        } else {
          std::memset(live, 0, len);
          stats->pages_zeroed += e - i;
        }
        stats->pages_restored += e - i;
        i = e;
      } else {
        const char* live = s.live() + i * page;
        char* saved = s.copy + i * page;
        if (IsAllZero(live, page)) {
          if (s.test(i)) {
            // Free the saved page; it reads as zero again.
            PW_RETURN_IF_ERROR(env_->Madvise(saved, page, MADV_DONTNEED)
                                   .WithContext("Checkpoint::Update: freeing a saved page"));
            s.set(i, false);
            --stats_.saved_pages;
          }
        } else {
          std::memcpy(saved, live, page);
          if (!s.test(i)) ++stats_.saved_pages;
          s.set(i, true);
        }
        stats->pages_restored += 1;
        ++i;
      }
    }
  }
  return Status::Ok();
}

Result<RewindStats> CheckpointImpl::Rewind() {
  if (broken_update_) {
    return Status::FailedPrecondition(
        "Checkpoint::Rewind: the last Update() failed half way, so the saved state is a mix; "
        "call Update() again first");
  }
  const uint64_t t0 = NowNs();
  RewindStats st;
  Status quiesced;
  if (RewindQuiesced(&st, &quiesced)) {
    PW_RETURN_IF_ERROR(quiesced);
    return Finished(st, t0);
  }
  std::vector<PageRange> written = std::move(pending_);
  pending_.clear();
  Status cs = tracker_->Collect(&written);
  // Pages reported before a Collect error were re-armed: put them back now.
  Status as = Apply(written, /*restore=*/true, &st);
  if (!cs.ok() || !as.ok()) {
    // The tracker re-armed what it reported, so remember it for the next
    // call; do not re-arm anything else: pages still unreported show up in
    // the next Collect.
    pending_ = Coalesce(std::move(written));
    const Status& bad = !cs.ok() ? cs : as;
    return bad.WithContext(
        "Checkpoint::Rewind: the regions are only partly rewound; call "
        "Rewind() again before using them");
  }
  // Our own writes above were tracked; the pages now equal the checkpoint,
  // and writers are quiesced (precondition), so what this collect reports is
  // ours alone: re-arm and forget it.
  std::vector<PageRange> ours;
  Status rs = tracker_->Collect(&ours);
  if (!rs.ok()) {
    return rs.WithContext(
        "Checkpoint::Rewind: pages were put back but re-arming the tracker "
        "failed; call Rewind() again");
  }
  return Finished(st, t0);
}

// The fast rewind: find the written pages without re-arming them, copy the
// saved pages back while they are still unprotected (so the copy takes no
// write-protect faults), then re-arm exactly those pages. Two steps where
// Collect() has one atomic step - correct ONLY because Rewind's
// precondition is that writers are quiesced: no write can land between the
// scan and the re-arm, so nothing can be missed or re-armed unreported.
// Every failure leaves the unfinished pages "written" in the tracker (or in
// pending_), so the next Rewind() puts them back.
bool CheckpointImpl::RewindQuiesced(RewindStats* st, Status* result) {
  auto* q = dynamic_cast<track_internal::QuiescedRearm*>(tracker_.get());
  if (q == nullptr) return false;
  std::vector<PageRange> written = std::move(pending_);
  pending_.clear();
  Status ps = q->PeekWritten(&written);
  written = Coalesce(std::move(written));
  if (!ps.ok()) {
    // Nothing was re-armed; keep what was reported (madvise drops among it
    // are not reported again).
    pending_ = std::move(written);
    *result = ps.WithContext("Checkpoint::Rewind: nothing was put back");
    return true;
  }
  Status as = Apply(written, /*restore=*/true, st);
  if (!as.ok()) {
    pending_ = std::move(written);
    *result = as.WithContext(
        "Checkpoint::Rewind: the regions are only partly rewound; call Rewind() again before "
        "using them");
    return true;
  }
  Status rs = q->Rearm(written);
  if (!rs.ok()) {
    // Pages left unprotected read as written next time and are put back
    // again (they already equal the checkpoint).
    *result = rs.WithContext(
        "Checkpoint::Rewind: pages were put back but re-arming the tracker failed; call "
        "Rewind() again");
    return true;
  }
  *result = Status::Ok();
  return true;
}

RewindStats CheckpointImpl::Finished(RewindStats st, uint64_t t0) {
  st.elapsed_ns = NowNs() - t0;
  ++stats_.rewinds;
  stats_.last_rewind = st;
  stats_.total_pages_restored += st.pages_restored;
  return st;
}

Result<uint64_t> CheckpointImpl::Update() {
  RewindStats st;
  std::vector<PageRange> written = std::move(pending_);
  pending_.clear();
  Status cs = tracker_->Collect(&written);
  Status as = Apply(written, /*restore=*/false, &st);
  if (!cs.ok() || !as.ok()) {
    pending_ = Coalesce(std::move(written));
    broken_update_ = true;
    const Status& bad = !cs.ok() ? cs : as;
    return bad.WithContext(
        "Checkpoint::Update: the saved state is now a mix; call Update() "
        "again");
  }
  broken_update_ = false;
  ++stats_.updates;
  return st.pages_restored;
}

}  // namespace pagewise
