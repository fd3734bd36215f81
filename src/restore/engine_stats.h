// StatsRecorder: the restore engine's counters, latency samples and
// histograms, and the working-set trace, behind one small lock. The engine
// reports what happened (installed pages, served faults, kernel answers);
// the recorder keeps the books and hands out consistent copies.
//
// Thread safety: every method is safe from any thread. The lock is a leaf
// (nothing else is taken under it) and is held only for bookkeeping.
#ifndef PAGEWISE_RESTORE_ENGINE_STATS_H_
#define PAGEWISE_RESTORE_ENGINE_STATS_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "pagewise/restore.h"
#include "restore/engine_schedule.h"
#include "restore/space_map.h"

namespace pagewise::restore {

// How a fault was resolved (RestoreStats' latency_* histograms).
enum class FaultClass { kZero, kDemand, kPrefetchHit, kLatePrefetch };

class StatsRecorder {
 public:
  using Clock = std::chrono::steady_clock;

  StatsRecorder(size_t page_size, size_t max_latency_samples, bool record_trace);

  // The restore's time origin (Start()).
  void SetStart(Clock::time_point t) { start_ = t; }
  Clock::time_point start() const { return start_; }
  uint64_t SinceStartNs(Clock::time_point t) const;

  void SpaceAdded(uint64_t pages);
  // Pages installed from the source by `kind` (zero: with UFFDIO_ZEROPAGE).
  void Installed(FillKind kind, bool zero, uint64_t pages);
  // A fault needed source data: counts it, and records the pages of `run`
  // (faulting page first) in the trace. `late_prefetch`: the page is on the
  // prefetch list but was not installed yet.
  void DemandFault(Clock::time_point read_at, uint64_t src, const Run& run, bool late_prefetch);
  // Read-ahead pages go into the trace too (a replay must bring them in).
  void TraceRun(Clock::time_point read_at, const Run& run);
  // A fault was resolved (the faulting thread can run), `read_at` being
  // when its message was read.
  void FaultResolved(FaultClass cls, Clock::time_point read_at, Clock::time_point now);
  // Adds n to one counter field.
  void Add(uint64_t RestoreStats::*field, uint64_t n = 1);
  void AddFillNs(uint64_t ns);
  void Resident(Clock::time_point now);
  // Continues the books of a handed-over restore.
  void Seed(const RestoreStats& stats, std::vector<TraceEntry> trace);

  // A copy with the percentiles computed. spaces_live is the caller's.
  RestoreStats Snapshot() const;
  std::vector<TraceEntry> TraceEntries() const;

 private:
  size_t ps_;
  size_t max_samples_;
  bool record_trace_;
  Clock::time_point start_;

  mutable std::mutex mu_;
  RestoreStats stats_;                   // guarded by mu_
  std::vector<TraceEntry> trace_;        // guarded by mu_
  std::unordered_set<uint64_t> traced_;  // guarded by mu_
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_ENGINE_STATS_H_
