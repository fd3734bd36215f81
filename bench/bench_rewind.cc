// `pagewise bench rewind`: Checkpoint::Rewind at snapshot-fuzzer scale.
//
// A snapshot fuzzer runs its target, then resets memory to the snapshot,
// thousands of times a second, with a few dozen pages dirtied per run. For
// a region of 16 MiB and of 256 MiB (x --scale, at least 1 MiB; 4 KiB pages,
// MADV_NOHUGEPAGE, every page non-zero), checkpointed once:
//   rewind_<size>_50p  p50_us (and p99_us) of Checkpoint::Rewind() after
//                      writing 8 bytes into each of 50 random distinct
//                      pages, over many iterations after a warm-up. Every
//                      rewind is checked (outside the timing) to have put
//                      back the 50 pages; the whole region is compared
//                      with its saved reference at the end.
// Baselines, measured in the same run on the same page sets:
//   scan_copy_floor    one PAGEMAP_SCAN (written + WP_MATCHING, the bare
//                      primitive under the tracker: WriteScanBaseline) over a
//                      second region of the same size armed for async
//                      write-protect and dirtied identically, plus memcpy
//                      of the reported pages from a saved copy into a warm
//                      buffer: finding and copying the pages, nothing else.
//   fork_reset         fork(); the child writes the same 50 pages and
//                      _exits; the parent waits: a fork-based reset.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench.h"
#include "pagewise/checkpoint.h"
#include "pagewise/snapshot.h"
#include "sys/fork_child.h"
#include "sys/scan_baseline.h"

namespace pagewise::bench {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kDirtyPages = 50;
constexpr int kWarmup = 20;
constexpr int kRewindIters = 400;
constexpr int kForkIters = 40;

// Every page non-zero and distinct: a seeded word every 64 bytes.
void Fill(char* p, size_t len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t off = 0; off < len; off += 64) {
    const uint64_t v = rng() | 1;
    std::memcpy(p + off, &v, 8);
  }
}

// `iters` sets of kDirtyPages distinct random pages of [0, pages).
std::vector<std::vector<uint32_t>> PageSets(size_t pages, int iters, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> all(pages);
  for (size_t i = 0; i < pages; ++i) all[i] = static_cast<uint32_t>(i);
  std::vector<std::vector<uint32_t>> sets;
  for (int it = 0; it < iters; ++it) {
    for (size_t k = 0; k < kDirtyPages; ++k) std::swap(all[k], all[k + rng() % (pages - k)]);
    sets.emplace_back(all.begin(), all.begin() + kDirtyPages);
  }
  return sets;
}

// The fuzz run: 8 bytes into each page of the set.
void Dirty(char* base, size_t page, const std::vector<uint32_t>& set, uint64_t salt) {
  for (uint32_t i : set) {
    const uint64_t v = salt * 0x9E3779B97F4A7C15ull + i;
    std::memcpy(base + size_t{i} * page + 8 * (salt % 64), &v, 8);
  }
}

Status CheckPages(const char* mem, const char* ref, size_t page, const std::vector<uint32_t>& set,
                  const std::string& what) {
  for (uint32_t i : set) {
    if (std::memcmp(mem + size_t{i} * page, ref + size_t{i} * page, page) != 0) {
      return Status::Internal("bench rewind: " + what + " left page " + std::to_string(i) +
                              " different from the checkpoint");
    }
  }
  return Status::Ok();
}

struct Figures {
  double rewind_p50_us = 0, rewind_p99_us = 0;
  double floor_p50_us = 0, floor_p99_us = 0;
  double fork_p50_us = 0, fork_p99_us = 0;
};

Result<double> TimeRewinds(Checkpoint* cp, char* mem, const char* ref, size_t page,
                           const std::vector<std::vector<uint32_t>>& sets, Figures* f) {
  std::vector<double> us;
  for (size_t it = 0; it < sets.size(); ++it) {
    Dirty(mem, page, sets[it], it + 1);
    const uint64_t t0 = NowNs();
    Result<RewindStats> rs = cp->Rewind();
    const uint64_t t1 = NowNs();
    if (!rs.ok()) return rs.status().WithContext("bench rewind: Rewind");
    PW_RETURN_IF_ERROR(CheckPages(mem, ref, page, sets[it], "Rewind"));
    if (rs->pages_restored != kDirtyPages) {
      return Status::Internal("bench rewind: Rewind put back " +
                              std::to_string(rs->pages_restored) + " pages, " +
                              std::to_string(kDirtyPages) + " were written");
    }
    if (it >= static_cast<size_t>(kWarmup)) us.push_back(static_cast<double>(t1 - t0) / 1e3);
  }
  f->rewind_p50_us = Median(us);
  f->rewind_p99_us = Percentile(us, 0.99);
  return f->rewind_p50_us;
}

Status TimeFloor(size_t len, size_t page, const char* ref,
                 const std::vector<std::vector<uint32_t>>& sets, Figures* f) {
  AnonMapping region, scratch;
  PW_RETURN_IF_ERROR(region.Map(len, /*small_pages=*/true, /*warm=*/true));
  PW_RETURN_IF_ERROR(scratch.Map(len, /*small_pages=*/true, /*warm=*/true));
  std::memcpy(region.data(), ref, len);
  PW_ASSIGN_OR_RETURN(std::unique_ptr<WriteScanBaseline> scanner, WriteScanBaseline::Open());
  PW_RETURN_IF_ERROR(scanner->Arm(region.data(), len));
  std::vector<PageRange> found;
  found.reserve(kDirtyPages);
  std::vector<double> us;
  const uint64_t base = reinterpret_cast<uint64_t>(region.data());
  for (size_t it = 0; it < sets.size(); ++it) {
    Dirty(region.data(), page, sets[it], it + 1);
    found.clear();
    const uint64_t t0 = NowNs();
    Result<uint64_t> n = scanner->ScanWritten(region.data(), len, &found);
    if (!n.ok()) return n.status().WithContext("bench rewind: scan_copy_floor scan");
    for (const PageRange& r : found) {
      const uint64_t off = r.start - base;
      std::memcpy(scratch.data() + off, ref + off, r.end - r.start);
    }
    const uint64_t t1 = NowNs();
    if (*n != kDirtyPages) {
      return Status::Internal("bench rewind: the floor's scan found " + std::to_string(*n) +
                              " pages, " + std::to_string(kDirtyPages) + " were written");
    }
    if (it >= static_cast<size_t>(kWarmup)) us.push_back(static_cast<double>(t1 - t0) / 1e3);
  }
  f->floor_p50_us = Median(us);
  f->floor_p99_us = Percentile(us, 0.99);
  return Status::Ok();
}

Status TimeFork(char* mem, size_t page, const std::vector<std::vector<uint32_t>>& sets,
                Figures* f) {
  std::vector<double> us;
  for (int it = 0; it < kWarmup / 4 + kForkIters; ++it) {
    const std::vector<uint32_t>& set = sets[static_cast<size_t>(it) % sets.size()];
    const uint64_t t0 = NowNs();
    Result<int> code = sys::RunInForkedChild([&] {
      Dirty(mem, page, set, static_cast<uint64_t>(it) + 1);
      return 0;
    });
    const uint64_t t1 = NowNs();
    if (!code.ok()) return code.status().WithContext("bench rewind: fork_reset");
    if (*code != 0) return Status::Internal("bench rewind: fork_reset child failed");
    if (it >= kWarmup / 4) us.push_back(static_cast<double>(t1 - t0) / 1e3);
  }
  f->fork_p50_us = Median(us);
  f->fork_p99_us = Percentile(us, 0.99);
  return Status::Ok();
}

Status RunSize(const BenchOptions& opts, size_t mib, BenchReport* report) {
  const size_t page = PageSize();
  const size_t len = std::max(
      kMiB, static_cast<size_t>(double(mib * kMiB) * opts.scale) / (64 * page) * (64 * page));
  const size_t pages = len / page;
  const std::string subject = "rewind_" + std::to_string(mib) + "mib_50p";
  Progress(opts, "bench rewind: " + subject + ": preparing " + std::to_string(len >> 20) + " MiB");

  AnonMapping mem, ref;
  PW_RETURN_IF_ERROR(mem.Map(len, /*small_pages=*/true, /*warm=*/true));
  PW_RETURN_IF_ERROR(ref.Map(len, /*small_pages=*/true, /*warm=*/true));
  Fill(mem.data(), len, 0x5eed + mib);
  std::memcpy(ref.data(), mem.data(), len);
  const std::vector<std::vector<uint32_t>> sets = PageSets(pages, kWarmup + kRewindIters, mib);

  Figures f;
  {
    Progress(opts, "bench rewind: " + subject + ": checkpoint rewinds");
    PW_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> cp,
                        Checkpoint::Create({MakeRegion(mem.data(), len)}));
    PW_RETURN_IF_ERROR(TimeRewinds(cp.get(), mem.data(), ref.data(), page, sets, &f).status());
  }
  if (std::memcmp(mem.data(), ref.data(), len) != 0) {
    return Status::Internal("bench rewind: " + subject + ": memory differs from the checkpoint");
  }
  Progress(opts, "bench rewind: " + subject + ": scan_copy_floor");
  PW_RETURN_IF_ERROR(TimeFloor(len, page, ref.data(), sets, &f));
  Progress(opts, "bench rewind: " + subject + ": fork_reset");
  PW_RETURN_IF_ERROR(TimeFork(mem.data(), page, sets, &f));

  report->Add({subject, "p50_us", f.rewind_p50_us, "us", "scan_copy_floor", f.floor_p50_us});
  report->Add({subject, "p50_us", f.rewind_p50_us, "us", "fork_reset", f.fork_p50_us});
  report->Add({subject, "p99_us", f.rewind_p99_us, "us", "scan_copy_floor", f.floor_p99_us});
  report->Add({subject, "p99_us", f.rewind_p99_us, "us", "fork_reset", f.fork_p99_us});
  report->Add(
      {subject, "region_mib", double(len) / double(kMiB), "MiB", "unscaled_mib", double(mib)});
  return Status::Ok();
}

Status RunRewindBench(const BenchOptions& opts, BenchReport* report) {
  for (size_t mib : {size_t{16}, size_t{256}}) PW_RETURN_IF_ERROR(RunSize(opts, mib, report));
  Progress(opts, "");
  return Status::Ok();
}

BenchRegistration reg("rewind",
                      "Checkpoint::Rewind of 50 random dirty pages in 16 and 256 MiB (x scale), "
                      "beside one scan + copy of those pages and a fork-based reset",
                      RunRewindBench);

}  // namespace
}  // namespace pagewise::bench
