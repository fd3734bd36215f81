// `pagewise bench track`: what tracking costs, per available backend.
//
// On a warmed region of 1 GiB x scale (4 KiB pages, MADV_NOHUGEPAGE):
//   first_write     ns per page for writing one byte to every page right
//                   after a Collect() re-armed all of them (median of 3);
//                   baseline plain_write: the same loop again over the
//                   now-writable pages (best of 5 passes per rep, median).
//   collect_Npct    ms per Collect() with N% of the pages (random, written
//                   one byte each) written since the last collect, N in
//                   0, 1, 10, 100; median of several reps. Two rows each:
//                   baseline raw_ioctl: one bare PAGEMAP_SCAN written +
//                   WP_MATCHING pass (WriteScanBaseline) over the same state;
//                   for uffd-wp-async on the tracked region itself, for the
//                   other backends on a separate region armed for async
//                   write-protect and written identically, right after;
//                   baseline hash_compare: a naive peer that XXH3-hashes every
//                   page and compares with the previous pass's hashes.
// Every Collect() is also checked (outside the timing) to report every page
// that was written; a miss fails the benchmark.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "bench.h"
#include "pagewise/probe.h"
#include "pagewise/tracker.h"
#include "sys/scan_baseline.h"

namespace pagewise::bench {
namespace {

struct Fraction {
  const char* metric;
  double fraction;
  int reps;
};
constexpr Fraction kFractions[] = {{"collect_0pct", 0.0, 7},
                                   {"collect_1pct", 0.01, 7},
                                   {"collect_10pct", 0.10, 5},
                                   {"collect_100pct", 1.0, 3}};
constexpr int kFirstWriteReps = 3;

// A warmed anonymous region of exact 4 KiB pages whatever the THP mode (so
// every backend sees the same), unmapped on destruction.
class TrackedMapping {
 public:
  Status Map(size_t len) {
    return m_.Map(len, /*small_pages=*/true, /*warm=*/true).WithContext("bench track");
  }
  char* data() const { return m_.data(); }
  size_t size() const { return m_.size(); }
  size_t pages() const { return m_.size() / PageSize(); }

 private:
  AnonMapping m_;
};

// One byte per listed page (the pages are sorted: a realistic access order
// that also keeps the mprotect backend's VMA count down).
void TouchPages(char* base, const std::vector<uint32_t>& pages) {
  const size_t page = PageSize();
  volatile char* c = base;
  for (uint32_t i : pages) c[i * page] = static_cast<char>(c[i * page] + 1);
}

// Every page once; returns ns per page.
double TouchAllNs(char* base, size_t npages) {
  const size_t page = PageSize();
  volatile char* c = base;
  const uint64_t t0 = NowNs();
  for (size_t i = 0; i < npages; ++i) c[i * page] = static_cast<char>(c[i * page] + 1);
  return static_cast<double>(NowNs() - t0) / static_cast<double>(npages);
}

std::vector<uint32_t> RandomPages(size_t npages, double fraction, uint64_t seed) {
  std::vector<uint32_t> all(npages);
  for (size_t i = 0; i < npages; ++i) all[i] = static_cast<uint32_t>(i);
  const size_t n = static_cast<size_t>(static_cast<double>(npages) * fraction + 0.5);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; ++i) std::swap(all[i], all[i + rng() % (npages - i)]);
  all.resize(n);
  std::sort(all.begin(), all.end());
  return all;
}

// Fails unless every page in `written` lies in `ranges` (sorted).
Status VerifyCovered(const char* base, const std::vector<uint32_t>& written,
                     const std::vector<PageRange>& ranges, const std::string& who) {
  const uint64_t b = reinterpret_cast<uint64_t>(base);
  const size_t page = PageSize();
  size_t r = 0, missed = 0;
  for (uint32_t i : written) {
    const uint64_t a = b + uint64_t{i} * page;
    while (r < ranges.size() && ranges[r].end <= a) ++r;
    if (r == ranges.size() || ranges[r].start > a) ++missed;
  }
  if (missed == 0) return Status::Ok();
  return Status::Internal("bench track: " + who + " did not report " + std::to_string(missed) +
                          " of " + std::to_string(written.size()) +
                          " written pages; run "
                          "`pagewise check --backend " +
                          who + "`");
}

// The naive peer: remembers a hash per page; a pass rehashes everything.
class HashPeer {
 public:
  explicit HashPeer(const TrackedMapping& r) : base_(r.data()), hashes_(r.pages()) { Pass(); }
  // Returns how many pages changed since the previous pass.
  size_t Pass() {
    const size_t page = PageSize();
    size_t changed = 0;
    for (size_t i = 0; i < hashes_.size(); ++i) {
      const uint64_t h = XXH3_64bits(base_ + i * page, page);
      if (h != hashes_[i]) {
        hashes_[i] = h;
        ++changed;
      }
    }
    return changed;
  }

 private:
  const char* base_;
  std::vector<uint64_t> hashes_;
};

// Times one collect; appends nothing to the report.
Result<double> TimedCollect(Tracker* t, std::vector<PageRange>* ranges) {
  ranges->clear();
  const uint64_t t0 = NowNs();
  Status s = t->Collect(ranges);
  const double ms = static_cast<double>(NowNs() - t0) / 1e6;
  PW_RETURN_IF_ERROR(s.WithContext("bench track: Collect"));
  return ms;
}

Result<double> TimedRawScan(WriteScanBaseline* scanner, const TrackedMapping& r,
                            std::vector<PageRange>* ranges) {
  ranges->clear();
  const uint64_t t0 = NowNs();
  Result<uint64_t> n = scanner->ScanWritten(r.data(), r.size(), ranges);
  const double ms = static_cast<double>(NowNs() - t0) / 1e6;
  if (!n.ok()) return n.status().WithContext("bench track: raw PAGEMAP_SCAN");
  return ms;
}

// Raw-scan baseline on its own armed region, for backends other than
// uffd-wp-async: the same page sets, written the same way.
Status RawBaselineSeparate(size_t len, const std::vector<std::vector<uint32_t>>& sets,
                           std::vector<double>* raw_ms) {
  TrackedMapping r;
  PW_RETURN_IF_ERROR(r.Map(len));
  PW_ASSIGN_OR_RETURN(std::unique_ptr<WriteScanBaseline> scanner, WriteScanBaseline::Open());
  PW_RETURN_IF_ERROR(scanner->Arm(r.data(), r.size()));
  std::vector<PageRange> ranges;
  for (size_t f = 0; f < sets.size(); ++f) {
    std::vector<double> samples;
    for (int rep = -1; rep < kFractions[f].reps; ++rep) {  // rep -1: warm-up
      TouchPages(r.data(), sets[f]);
      PW_ASSIGN_OR_RETURN(double ms, TimedRawScan(scanner.get(), r, &ranges));
      PW_RETURN_IF_ERROR(VerifyCovered(r.data(), sets[f], ranges, "raw PAGEMAP_SCAN"));
      if (rep >= 0) samples.push_back(ms);
    }
    raw_ms->push_back(Median(samples));
  }
  return Status::Ok();
}

Status BenchBackend(TrackBackend backend, size_t len, const BenchOptions& opts,
                    BenchReport* report) {
  const std::string name(BackendName(backend));
  const bool async = backend == TrackBackend::kUffdWpAsync;
  std::vector<std::vector<uint32_t>> sets;
  std::vector<double> collect_ms, raw_ms, hash_ms;
  {
    TrackedMapping r;
    PW_RETURN_IF_ERROR(r.Map(len));
    const size_t npages = r.pages();
    PW_ASSIGN_OR_RETURN(std::unique_ptr<Tracker> tracker, Tracker::Create({backend}));
    PW_RETURN_IF_ERROR(tracker->Track(r.data(), r.size()));
    std::unique_ptr<WriteScanBaseline> scanner;
    if (async) {
      PW_ASSIGN_OR_RETURN(scanner, WriteScanBaseline::Open());
    }
    std::vector<PageRange> ranges;
    std::vector<uint32_t> all = RandomPages(npages, 1.0, 1);

    // Warm-up: one full write + collect cycle, untimed.
    TouchAllNs(r.data(), npages);
    PW_RETURN_IF_ERROR(TimedCollect(tracker.get(), &ranges).status());
    PW_RETURN_IF_ERROR(VerifyCovered(r.data(), all, ranges, name));

    // first_write vs plain_write. After each rep every page is written, so
    // the next collect re-arms all of them.
    std::vector<double> first, plain;
    for (int rep = 0; rep < kFirstWriteReps; ++rep) {
      Progress(opts, name + ": first_write rep " + std::to_string(rep + 1));
      PW_RETURN_IF_ERROR(TimedCollect(tracker.get(), &ranges).status());
      first.push_back(TouchAllNs(r.data(), npages));
      // A pass over writable pages is short (~ms): preemption on a busy
      // machine inflates single passes, so take the best of five.
      double best = TouchAllNs(r.data(), npages);
      for (int k = 0; k < 4; ++k) best = std::min(best, TouchAllNs(r.data(), npages));
      plain.push_back(best);
    }
    PW_RETURN_IF_ERROR(TimedCollect(tracker.get(), &ranges).status());
    PW_RETURN_IF_ERROR(VerifyCovered(r.data(), all, ranges, name));
    report->Add({name, "first_write", Median(first), "ns/page", "plain_write", Median(plain)});

    HashPeer peer(r);
    for (const Fraction& f : kFractions) {
      sets.push_back(RandomPages(npages, f.fraction, 42 + sets.size()));
      const std::vector<uint32_t>& set = sets.back();
      std::vector<double> c, w, h;
      for (int rep = -1; rep < f.reps; ++rep) {  // rep -1: warm-up, not recorded
        Progress(opts, name + ": " + f.metric + " rep " + std::to_string(rep + 2));
        TouchPages(r.data(), set);
        PW_ASSIGN_OR_RETURN(double ms, TimedCollect(tracker.get(), &ranges));
        PW_RETURN_IF_ERROR(VerifyCovered(r.data(), set, ranges, name));
        if (rep >= 0) c.push_back(ms);
        if (async) {
          // Same region, same state: the bare kernel pass.
          TouchPages(r.data(), set);
          PW_ASSIGN_OR_RETURN(double raw, TimedRawScan(scanner.get(), r, &ranges));
          PW_RETURN_IF_ERROR(VerifyCovered(r.data(), set, ranges, "raw PAGEMAP_SCAN"));
          if (rep >= 0) w.push_back(raw);
        }
        TouchPages(r.data(), set);
        const uint64_t t0 = NowNs();
        const size_t changed = peer.Pass();
        const double hms = static_cast<double>(NowNs() - t0) / 1e6;
        if (changed != set.size()) {
          return Status::Internal("bench track: hash peer saw " + std::to_string(changed) +
                                  " changed pages, expected " + std::to_string(set.size()));
        }
        if (rep >= 0) h.push_back(hms);
        // The hash pass left these pages written for the tracker: clear.
        PW_RETURN_IF_ERROR(TimedCollect(tracker.get(), &ranges).status());
      }
      collect_ms.push_back(Median(c));
      hash_ms.push_back(Median(h));
      if (async) raw_ms.push_back(Median(w));
    }
    PW_RETURN_IF_ERROR(tracker->Untrack(r.data(), r.size()));
  }
  if (!async) {
    Progress(opts, name + ": raw_ioctl baseline on a separate region");
    PW_RETURN_IF_ERROR(RawBaselineSeparate(len, sets, &raw_ms));
  }
  for (size_t f = 0; f < std::size(kFractions); ++f) {
    report->Add({name, kFractions[f].metric, collect_ms[f], "ms", "raw_ioctl", raw_ms[f]});
    report->Add({name, kFractions[f].metric, collect_ms[f], "ms", "hash_compare", hash_ms[f]});
  }
  return Status::Ok();
}

Status RunTrackBench(const BenchOptions& opts, BenchReport* report) {
  const size_t page = PageSize();
  size_t len = static_cast<size_t>(static_cast<double>(1ull << 30) * opts.scale) / page * page;
  len = std::max<size_t>(len, 256 * page);
  int ran = 0;
  for (const BackendInfo& b : DescribeBackends(Features())) {
    // soft-dirty is not atomic (it can lose racing writes): not a subject.
    if (!b.available || !b.atomic) continue;
    PW_ASSIGN_OR_RETURN(TrackBackend backend, ParseBackend(b.name));
    Status s = BenchBackend(backend, len, opts, report);
    if (s.code() == Code::kNotSupported) {
      // The probe offers it but this build or environment cannot create it:
      // say so, and measure the others.
      std::fprintf(stderr, "bench track: %s skipped: %s\n", b.name.c_str(), s.ToString().c_str());
      continue;
    }
    PW_RETURN_IF_ERROR(s.WithContext(b.name));
    ++ran;
  }
  Progress(opts, "");
  if (ran == 0) return Status::NotSupported("bench track: no tracking backend is available");
  return Status::Ok();
}

BenchRegistration reg("track",
                      "Tracking cost per backend: first write after collect, and collect time "
                      "at 0/1/10/100% written, beside raw PAGEMAP_SCAN and hash-compare baselines",
                      RunTrackBench);

}  // namespace
}  // namespace pagewise::bench
