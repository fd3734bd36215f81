// StatsRecorder and LatencyHistogram.
#include "restore/engine_stats.h"

#include <algorithm>

namespace pagewise {

void LatencyHistogram::Record(uint64_t ns) {
  int k = 0;
  while (k < kBuckets - 1 && ns > BucketUpperNs(k)) ++k;
  counts[k]++;
  count++;
  sum_ns += ns;
  max_ns = std::max(max_ns, ns);
}

uint64_t LatencyHistogram::PercentileNs(double q) const {
  if (count == 0) return 0;
  const uint64_t rank =
      std::max<uint64_t>(1, static_cast<uint64_t>(q * static_cast<double>(count) + 0.999999));
  uint64_t seen = 0;
  for (int k = 0; k < kBuckets; ++k) {
    seen += counts[k];
    if (seen >= rank) return std::min(BucketUpperNs(k), max_ns);
  }
  return max_ns;
}

namespace restore {

StatsRecorder::StatsRecorder(size_t page_size, size_t max_latency_samples, bool record_trace)
    : ps_(page_size),
      max_samples_(max_latency_samples),
      record_trace_(record_trace),
      start_(Clock::now()) {}

uint64_t StatsRecorder::SinceStartNs(Clock::time_point t) const {
  if (t < start_) return 0;
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(t - start_).count());
}

void StatsRecorder::SpaceAdded(uint64_t pages) {
  std::lock_guard<std::mutex> lk(mu_);
  stats_.pages_total += pages;
  stats_.spaces_total++;
}

void StatsRecorder::Installed(FillKind kind, bool zero, uint64_t pages) {
  std::lock_guard<std::mutex> lk(mu_);
  const uint64_t bytes = zero ? 0 : pages * ps_;
  switch (kind) {
    case FillKind::kDemand:
      stats_.pages_demand += pages;
      stats_.bytes_demand += bytes;
      break;
    case FillKind::kReadahead:
      stats_.pages_demand += pages;
      stats_.pages_readahead += pages;
      stats_.bytes_readahead += bytes;
      break;
    case FillKind::kPrefetch:
      stats_.pages_prefetch += pages;
      stats_.pages_background += pages;
      stats_.bytes_prefetch += bytes;
      break;
    case FillKind::kBackground:
      stats_.pages_background += pages;
      stats_.bytes_background += bytes;
      break;
  }
  if (zero) {
    stats_.zero_pages += pages;
  } else {
    stats_.bytes_copied += bytes;
  }
}

void StatsRecorder::DemandFault(Clock::time_point read_at, uint64_t src, const Run& run,
                                bool late_prefetch) {
  const uint64_t t_ns = SinceStartNs(read_at);
  std::lock_guard<std::mutex> lk(mu_);
  stats_.demand_faults++;
  if (stats_.first_fault_ns < 0) stats_.first_fault_ns = static_cast<int64_t>(t_ns);
  if (late_prefetch) stats_.prefetch_late_faults++;
  if (!record_trace_) return;
  // The whole window this fault installs, faulting page first: a replay
  // must bring in what the program got, not one page per window.
  if (traced_.insert(src).second) trace_.push_back({src, t_ns});
  for (uint64_t k = 0; k < run.pages; ++k) {
    const uint64_t s = run.src + k * ps_;
    if (traced_.insert(s).second) trace_.push_back({s, t_ns});
  }
}

void StatsRecorder::TraceRun(Clock::time_point read_at, const Run& run) {
  if (!record_trace_) return;
  const uint64_t t_ns = SinceStartNs(read_at);
  std::lock_guard<std::mutex> lk(mu_);
  for (uint64_t k = 0; k < run.pages; ++k) {
    const uint64_t s = run.src + k * ps_;
    if (traced_.insert(s).second) trace_.push_back({s, t_ns});
  }
}

void StatsRecorder::FaultResolved(FaultClass cls, Clock::time_point read_at,
                                  Clock::time_point now) {
  const uint64_t ns =
      now > read_at
          ? static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(now - read_at).count())
          : 0;
  std::lock_guard<std::mutex> lk(mu_);
  switch (cls) {
    case FaultClass::kZero:
      stats_.latency_zero.Record(ns);
      return;
    case FaultClass::kPrefetchHit:
      stats_.latency_prefetch_hit.Record(ns);
      stats_.prefetch_hit_faults++;
      return;
    case FaultClass::kDemand:
      stats_.latency_demand.Record(ns);
      break;
    case FaultClass::kLatePrefetch:
      stats_.latency_late_prefetch.Record(ns);
      break;
  }
  // Demand faults (late prefetch included) also keep raw samples.
  if (stats_.fault_latency_ns.size() < max_samples_) {
    stats_.fault_latency_ns.push_back(static_cast<uint32_t>(std::min<uint64_t>(ns, UINT32_MAX)));
    stats_.fault_time_ns.push_back(SinceStartNs(read_at));
  }
}

void StatsRecorder::Add(uint64_t RestoreStats::*field, uint64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  stats_.*field += n;
}

void StatsRecorder::AddFillNs(uint64_t ns) {
  std::lock_guard<std::mutex> lk(mu_);
  stats_.fill_ns += ns;
}

void StatsRecorder::Resident(Clock::time_point now) {
  std::lock_guard<std::mutex> lk(mu_);
  stats_.resident_ns = static_cast<int64_t>(SinceStartNs(now));
}

void StatsRecorder::Seed(const RestoreStats& stats, std::vector<TraceEntry> trace) {
  std::lock_guard<std::mutex> lk(mu_);
  stats_ = stats;
  trace_ = std::move(trace);
  traced_.clear();
  for (const TraceEntry& t : trace_) traced_.insert(t.offset);
}

RestoreStats StatsRecorder::Snapshot() const {
  RestoreStats out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    out = stats_;
  }
  if (!out.fault_latency_ns.empty()) {
    std::vector<uint32_t> v = out.fault_latency_ns;
    auto pct = [&](double p) {
      const size_t k =
          std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
      std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(k), v.end());
      return static_cast<uint64_t>(v[k]);
    };
    out.fault_latency_p50_ns = pct(0.50);
    out.fault_latency_p99_ns = pct(0.99);
  }
  return out;
}

std::vector<TraceEntry> StatsRecorder::TraceEntries() const {
  std::lock_guard<std::mutex> lk(mu_);
  return trace_;
}

}  // namespace restore
}  // namespace pagewise
