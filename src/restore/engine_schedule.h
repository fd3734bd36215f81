// Scheduling for the restore engine: what to fill, and when. Pure
// planning over a space's SpaceMap and SpaceSchedule: no system calls, no
// locks (the caller holds Space::mu).
//
// Demand: a fault fills the unfilled run around it inside the aligned
// window of fault_window_pages. Faults that follow each other's windows
// form a sequential stream; from the third fault of a stream on (each
// starting where the previous demand work ended), the demand thread also
// reads ahead after the window (twice the window, doubling per further
// fault, up to kMaxReadaheadPages). The background filler follows the
// newest demand run's end, so it fills ahead of a sequential reader too.
//
// Background, in order: (1) the prefetch list (a recorded working set),
// in trace order, coalesced into runs; (2) what follows recent demand runs
// (the newest first, so a sequential reader finds its next pages in
// place); (3) everything else in address order, wrapping once.
//
// Thread safety: Scheduler is immutable after construction; its methods
// may run concurrently on different SpaceSchedules.
#ifndef PAGEWISE_RESTORE_ENGINE_SCHEDULE_H_
#define PAGEWISE_RESTORE_ENGINE_SCHEDULE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "restore/space_map.h"

namespace pagewise::restore {

// Who installs pages (stats and trace tell them apart).
enum class FillKind { kDemand, kReadahead, kPrefetch, kBackground };

// Per-space scheduling state (guarded by Space::mu; copied on FORK).
struct SpaceSchedule {
  uint64_t cursor = 0;         // address-order fill position
  size_t prefetch_pos = 0;     // next entry of the prefetch list
  std::deque<uint64_t> hints;  // addresses after recent demand runs, newest last
  // Sequential stream: the address right after the last demand run (and its
  // read-ahead), and how many demand faults in a row started there.
  uint64_t stream_next = 0;
  uint32_t streak = 0;
};

class Scheduler {
 public:
  static constexpr size_t kMaxHints = 32;
  static constexpr size_t kMaxReadaheadPages = 256;  // 1 MiB of 4 KiB pages

  // `prefetch` (flat offsets) must outlive the scheduler. Without
  // `readahead` demand faults fill their windows only: the engine turns it
  // off without background fill (only faults install pages) and while
  // recording a trace (every page the program touches must fault).
  Scheduler(size_t page_size, size_t fault_window_pages, size_t background_batch_pages,
            const std::vector<uint64_t>* prefetch, bool readahead);

  // The run a demand fault at `page` (an unfilled page of `map`) fills.
  Run DemandRun(const SpaceMap& map, uint64_t page) const;
  // After the demand run `run` was installed: updates the stream state and
  // returns the read-ahead run to install next (pages == 0: none).
  Run AfterDemand(const SpaceMap& map, SpaceSchedule& s, const Run& run) const;
  // After a read-ahead run: moves the stream's front past it.
  void AfterReadahead(SpaceSchedule& s, const Run& run) const;

  // The next background batch for a space. *kind says whether it comes
  // from the prefetch list; *waste is increased by the prefetch entries
  // that had nothing left to install. Without background_on only prefetch
  // runs are planned. Empty: nothing to do for this space now.
  std::vector<Run> PlanBackground(const SpaceMap& map, SpaceSchedule& s, bool background_on,
                                  FillKind* kind, uint64_t* waste) const;

  // Marks the prefetch entries `s` has not planned yet as done and returns
  // how many there were: a space that completed (every page in place)
  // before the filler got to them counts them as waste. Requires the
  // space's mu, as every SpaceSchedule access.
  uint64_t DropUnplannedPrefetch(SpaceSchedule& s) const {
    if (prefetch_ == nullptr || s.prefetch_pos >= prefetch_->size()) return 0;
    const uint64_t left = prefetch_->size() - s.prefetch_pos;
    s.prefetch_pos = prefetch_->size();
    return left;
  }

  size_t page_size() const { return ps_; }
  size_t window() const { return window_; }
  size_t batch() const { return batch_; }

 private:
  std::vector<Run> PlanPrefetch(const SpaceMap& map, SpaceSchedule& s, uint64_t* waste) const;

  size_t ps_;
  size_t window_;
  size_t batch_;
  const std::vector<uint64_t>* prefetch_;
  bool readahead_;
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_ENGINE_SCHEDULE_H_
