// LiveCore: the state a live snapshot's saver and fault paths share - the
// regions, the per-page claims, the fault queue, the counters and the first
// error - plus the fault-path step "save this page before its first write".
//
// The core is held by shared_ptr: the tracker-mode fault hook keeps it alive
// even if the tracker calls the hook after the snapshot object is gone.
//
// Protocol (see pagewise/live.h): a page is claimed once, copied, marked
// saved, and only then may its protection be lifted. The saver claims whole
// bitmap words; the fault path claims single pages.
//
// Thread safety: every method is safe from any thread concurrently.
#ifndef PAGEWISE_LIVE_LIVE_CORE_H_
#define PAGEWISE_LIVE_LIVE_CORE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "live/fault_queue.h"
#include "live/latency_histogram.h"
#include "live/page_claims.h"
#include "pagewise/image.h"
#include "pagewise/live.h"
#include "pagewise/status.h"

namespace pagewise::live {

struct LiveRegion {
  uint32_t index = 0;   // image region index (the caller's order)
  uint64_t start = 0;   // address
  uint64_t length = 0;  // bytes
  uint64_t pages = 0;
  size_t first_word = 0;  // global page index of page p: first_word * 64 + p
  std::string name;
};

// What the fault path did with one fault.
enum class FaultOutcome {
  kSaved,         // this call copied the page: lift protection now
  kAlreadySaved,  // saved earlier: lift protection now
  kSaverCopying,  // the saver holds the page; it lifts protection (base mode)
                  // or it has been waited for (wait_for_saver)
  kNotOurs,       // outside every region
  kAborted,       // the snapshot failed or was cancelled: just release
};

class LiveCore {
 public:
  // `regions` sorted by address, non-overlapping, with first_word set.
  LiveCore(std::vector<LiveRegion> regions, size_t page_size, size_t fault_queue_pages);

  size_t page_size() const { return page_size_; }
  const std::vector<LiveRegion>& regions() const { return regions_; }
  uint64_t total_pages() const { return total_pages_; }
  PageClaims& claims() { return claims_; }
  FaultQueue& queue() { return queue_; }

  // The region holding `addr`, or nullptr.
  const LiveRegion* Find(uint64_t addr) const;

  // Fault path for the page at `page_addr` (page aligned): claims and copies
  // it into a spill buffer, marks it saved, and queues it for the saver.
  // Never does image I/O: if the spill area is full it waits for the saver
  // to move spilled pages on (counted as fault_queue_full). With
  // wait_for_saver, a page the saver is copying is waited for (tracker
  // mode: the caller lifts protection on return). The caller lifts the
  // protection (base mode: for kSaved, kAlreadySaved and kAborted) and times
  // the service.
  //
  // Fault-around (around > 1, a power of two <= 64): while the spill area is
  // at most half full, also claims and saves the other unclaimed pages of
  // the aligned group of `around` pages holding the faulting page (as many
  // as there are free buffers); beyond that only the faulting page, so that
  // once the spill area is the bottleneck every page the saver drains frees
  // a writer. *saved_first / *saved_bits (optional) receive the group's
  // first page address and a bit per page of it that this call saved (bit
  // i: saved_first + i pages); the caller lifts their protection.
  FaultOutcome SaveForFault(uint64_t page_addr, bool wait_for_saver, size_t around = 1,
                            uint64_t* saved_first = nullptr, uint64_t* saved_bits = nullptr);

  // Records a fault service time (ns).
  void RecordService(uint64_t ns) { service_.Record(ns); }
  void CountFault() { faults_.fetch_add(1, std::memory_order_relaxed); }

  // Saver-side accounting.
  void AddBackground(uint64_t pages) { background_.fetch_add(pages, std::memory_order_relaxed); }
  // Pages recorded in the image; returns the new total.
  uint64_t AddWritten(uint64_t pages) {
    return written_.fetch_add(pages, std::memory_order_acq_rel) + pages;
  }
  uint64_t written() const { return written_.load(std::memory_order_acquire); }

  // Records the first error and aborts: waiters in the queue and in
  // PageClaims are released. Later errors are dropped.
  void Fail(const Status& status);
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }
  Status error() const;

  // Fills the counters of *stats (not protect/total/peak fields).
  void FillStats(LiveSnapshotStats* stats) const;

 private:
  const std::vector<LiveRegion> regions_;
  const size_t page_size_;
  uint64_t total_pages_ = 0;
  PageClaims claims_;
  FaultQueue queue_;
  LatencyHistogram service_;
  std::atomic<uint64_t> faults_{0};
  std::atomic<uint64_t> queue_full_{0};
  std::atomic<uint64_t> by_fault_{0};
  std::atomic<uint64_t> background_{0};
  std::atomic<uint64_t> written_{0};
  std::atomic<bool> aborted_{false};
  mutable std::mutex error_mu_;
  Status error_;
};

// Sum of the region word counts: the global bitmap size in words.
size_t AssignWords(std::vector<LiveRegion>* regions);

}  // namespace pagewise::live

#endif  // PAGEWISE_LIVE_LIVE_CORE_H_
