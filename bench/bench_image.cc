// `pagewise bench image`: snapshot and eager-restore throughput, checkpoint
// rewind time, and storage of half-zero memory.
//
// Memory: 1 GiB x --scale, pages drawn from a seeded mix of 40% zero pages
// (written with zeros, so populated), 30% duplicates (one of 16 patterns)
// and 30% unique random pages.
//   snapshot  GB/s of memory captured by SnapshotFull (compression none, lz4,
//             zstd; the image is fsynced by Commit) beside write_raw (write()
//             of the raw bytes to a file, then fsync) and memcpy (into a
//             warm buffer).
//   restore   GB/s of memory restored by RestoreEager into fresh mappings
//             beside read_raw (read() of the raw file into a fresh mapping)
//             and memcpy (into a fresh mapping).
//   rewind    ms per Checkpoint::Rewind after writing 0.1%, 1%, 10% of the
//             pages, beside fork_reset (fork; the child applies the same
//             writes and _exits; the parent waits: whole iteration timed)
//             and full_copy (memcpy of the whole region from a saved copy).
//   import_half_zero  bytes stored (before compression) for a flat buffer
//             whose pages are half zero, beside its raw size.
// Every figure is a median over repetitions, after a warm-up.
#include <fcntl.h>
#include <sys/mman.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "bench.h"
#include "pagewise/checkpoint.h"
#include "pagewise/image.h"
#include "pagewise/snapshot.h"
#include "sys/env.h"
#include "sys/fork_child.h"

namespace pagewise::bench {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMiB = 1024.0 * 1024.0;

double GBps(size_t bytes, double ns) { return ns > 0 ? static_cast<double>(bytes) / ns : 0; }

// 40% zero / 30% duplicate / 30% random pages (or half zero / half random).
void FillMix(char* p, size_t pages, size_t page, uint64_t seed, bool half_zero) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<char>> dups(16, std::vector<char>(page));
  for (auto& d : dups) {
    for (size_t i = 0; i < page; i += 8) {
      uint64_t v = rng();
      std::memcpy(d.data() + i, &v, 8);
    }
  }
  for (size_t i = 0; i < pages; ++i) {
    char* pg = p + i * page;
    const uint64_t r = rng() % 100;
    if (half_zero ? r < 50 : r < 40) {
      std::memset(pg, 0, page);
    } else if (!half_zero && r < 70) {
      std::memcpy(pg, dups[rng() % dups.size()].data(), page);
    } else {
      for (size_t k = 0; k < page; k += 8) {
        uint64_t v = rng();
        std::memcpy(pg + k, &v, 8);
      }
    }
  }
}

Status WriteRaw(const std::string& path, const char* p, size_t len) {
  Env* env = Env::Default();
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  Status s = WriteFully(env, fd, p, len, 0);
  if (s.ok()) s = env->Fsync(fd);
  Status c = env->Close(fd);
  return s.ok() ? c : s;
}

Status ReadRaw(const std::string& path, char* p, size_t len) {
  Env* env = Env::Default();
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY | O_CLOEXEC));
  Status s = ReadFully(env, fd, p, len, 0);
  env->Close(fd).IgnoreError();  // read-only: nothing was written that a close could lose
  return s;
}

// Median ns of `reps` runs of fn after one untimed warm-up run.
template <typename Fn>
Result<double> TimeMedian(int reps, Fn fn) {
  PW_RETURN_IF_ERROR(fn());
  std::vector<double> ns;
  for (int i = 0; i < reps; ++i) {
    const uint64_t t0 = NowNs();
    PW_RETURN_IF_ERROR(fn());
    ns.push_back(static_cast<double>(NowNs() - t0));
  }
  return Median(ns);
}

Status ImportHalfZero(const BenchOptions& opts, size_t bytes, size_t page, const BenchTempDir& dir,
                      BenchReport* report) {
  Progress(opts, "image: import of a half-zero flat buffer");
  AnonMapping hz;
  PW_RETURN_IF_ERROR(hz.Map(bytes, /*small_pages=*/false, /*warm=*/false));
  FillMix(hz.data(), bytes / page, page, 11, /*half_zero=*/true);
  Region r = MakeRegion(hz.data(), bytes, RegionKind::kFlat, PROT_READ | PROT_WRITE, "flat");
  SnapshotOptions so;
  so.compression = Compression::kNone;
  PW_ASSIGN_OR_RETURN(SnapshotStats st, SnapshotFull({r}, dir.path() + "/flat.img", so));
  report->Add({"import_half_zero", "stored_bytes", st.image.raw_bytes / kMiB, "MiB", "raw_size",
               bytes / kMiB});
  report->Add({"import_half_zero", "file_bytes", st.image.file_bytes / kMiB, "MiB", "raw_size",
               bytes / kMiB});
  const double ratio = static_cast<double>(st.image.raw_bytes) / static_cast<double>(bytes);
  std::fprintf(stderr, "acceptance: half-zero import stores %.3f of raw before compression: %s\n",
               ratio, ratio <= 0.55 ? "PASS" : "FAIL");
  std::error_code ec;
  std::filesystem::remove(dir.path() + "/flat.img", ec);
  return Status::Ok();
}

// One function on purpose (longer than our ~80 lines): the protocol of the
// image benchmark, phase after phase on the same warmed heap and files,
// each figure beside the baseline measured just before it.
Status RunImageBench(const BenchOptions& opts, BenchReport* report) {
  const size_t page = PageSize();
  const size_t bytes =
      std::max<size_t>(256 * page, static_cast<size_t>(kGiB * opts.scale) / page * page);
  const size_t pages = bytes / page;
  const int reps = opts.scale <= 0.25 ? 3 : 2;
  BenchTempDir dir;
  PW_RETURN_IF_ERROR(dir.Create("image"));

  PW_RETURN_IF_ERROR(ImportHalfZero(opts, bytes, page, dir, report));

  // Exact 4 KiB tracking for the rewind part (no transparent huge pages).
  AnonMapping mem, ref, scratch;
  PW_RETURN_IF_ERROR(mem.Map(bytes, /*small_pages=*/true, /*warm=*/false));
  PW_RETURN_IF_ERROR(ref.Map(bytes, /*small_pages=*/false, /*warm=*/false));
  PW_RETURN_IF_ERROR(scratch.Map(bytes, /*small_pages=*/false, /*warm=*/true));
  FillMix(mem.data(), pages, page, 7, /*half_zero=*/false);
  std::memcpy(ref.data(), mem.data(), bytes);
  const std::vector<Region> regions = {MakeRegion(mem.data(), bytes)};

  // ---- snapshot ----------------------------------------------------------
  const std::string raw = dir.path() + "/raw.bin";
  PW_ASSIGN_OR_RETURN(double write_ns,
                      TimeMedian(reps, [&] { return WriteRaw(raw, mem.data(), bytes); }));
  PW_ASSIGN_OR_RETURN(double memcpy_ns, TimeMedian(reps, [&] {
                        std::memcpy(scratch.data(), mem.data(), bytes);
                        return Status::Ok();
                      }));
  const Compression comps[] = {Compression::kNone, Compression::kLz4, Compression::kZstd};
  double zstd_snapshot_ns = 0;
  for (Compression c : comps) {
    const std::string name(CompressionName(c));
    Progress(opts, "image: snapshot " + name);
    SnapshotOptions so;
    so.compression = c;
    const std::string path = dir.path() + "/" + name + ".img";
    SnapshotStats last;
    PW_ASSIGN_OR_RETURN(double ns, TimeMedian(reps, [&]() -> Status {
                          PW_ASSIGN_OR_RETURN(last, SnapshotFull(regions, path, so));
                          return Status::Ok();
                        }));
    if (c == Compression::kZstd) zstd_snapshot_ns = ns;
    report->Add({"snapshot", name, GBps(bytes, ns), "GB/s", "write_raw", GBps(bytes, write_ns)});
    report->Add({"snapshot", name, GBps(bytes, ns), "GB/s", "memcpy", GBps(bytes, memcpy_ns)});
    report->Add({"snapshot", name + "_file", last.image.file_bytes / kMiB, "MiB", "raw_size",
                 bytes / kMiB});
  }

  // ---- eager restore -----------------------------------------------------
  PW_ASSIGN_OR_RETURN(double read_ns, TimeMedian(reps, [&]() -> Status {
                        AnonMapping fresh;
                        PW_RETURN_IF_ERROR(fresh.Map(bytes, /*small_pages=*/false, /*warm=*/false));
                        return ReadRaw(raw, fresh.data(), bytes);
                      }));
  PW_ASSIGN_OR_RETURN(double fresh_memcpy_ns, TimeMedian(reps, [&]() -> Status {
                        AnonMapping fresh;
                        PW_RETURN_IF_ERROR(fresh.Map(bytes, /*small_pages=*/false, /*warm=*/false));
                        std::memcpy(fresh.data(), mem.data(), bytes);
                        return Status::Ok();
                      }));
  for (Compression c : comps) {
    const std::string name(CompressionName(c));
    Progress(opts, "image: restore " + name);
    const std::string path = dir.path() + "/" + name + ".img";
    std::vector<double> ns;
    for (int i = 0; i <= reps; ++i) {
      const uint64_t t0 = NowNs();  // the whole call: open, map, read, verify
      PW_ASSIGN_OR_RETURN(std::unique_ptr<RestoredMemory> m, RestoreEager(path));
      const uint64_t t1 = NowNs();
      if (i == 0 && std::memcmp(m->regions()[0].data, mem.data(), bytes) != 0) {
        return Status::Internal("bench image: restored memory differs from the original");
      }
      if (i > 0) ns.push_back(static_cast<double>(t1 - t0));  // i == 0: warm-up
    }
    const double med = Median(ns);
    report->Add({"restore", name, GBps(bytes, med), "GB/s", "read_raw", GBps(bytes, read_ns)});
    report->Add(
        {"restore", name, GBps(bytes, med), "GB/s", "memcpy", GBps(bytes, fresh_memcpy_ns)});
  }
  std::error_code ec;
  for (Compression c : comps) {
    std::filesystem::remove(dir.path() + "/" + std::string(CompressionName(c)) + ".img", ec);
  }
  std::filesystem::remove(raw, ec);

  // ---- rewind ------------------------------------------------------------
  // The same random page sets drive fork_reset and rewind.
  struct Level {
    const char* metric;
    double pct;
    std::vector<std::vector<uint32_t>> sets;
  };
  std::vector<Level> levels = {{"0.1pct", 0.1, {}}, {"1pct", 1.0, {}}, {"10pct", 10.0, {}}};
  const int iters = 5;
  std::mt19937_64 rng(99);
  std::vector<uint32_t> all(pages);
  for (size_t i = 0; i < pages; ++i) all[i] = static_cast<uint32_t>(i);
  for (Level& l : levels) {
    const size_t n = std::max<size_t>(1, static_cast<size_t>(pages * l.pct / 100.0));
    for (int it = 0; it <= iters; ++it) {  // +1: warm-up
      for (size_t k = 0; k < n; ++k) std::swap(all[k], all[k + rng() % (pages - k)]);
      l.sets.emplace_back(all.begin(), all.begin() + n);
    }
  }
  auto apply = [&](const std::vector<uint32_t>& set, uint64_t salt) {
    for (uint32_t i : set) {
      uint64_t* w = reinterpret_cast<uint64_t*>(mem.data() + static_cast<size_t>(i) * page);
      for (int k = 0; k < 8; ++k) w[k] = salt * 0x9E3779B97F4A7C15ull + i + k;
    }
  };

  Progress(opts, "image: full_copy");
  PW_ASSIGN_OR_RETURN(double full_ns, TimeMedian(reps, [&] {
                        std::memcpy(mem.data(), ref.data(), bytes);
                        return Status::Ok();
                      }));
  std::vector<double> fork_ms(levels.size());
  for (size_t li = 0; li < levels.size(); ++li) {
    Progress(opts, std::string("image: fork_reset ") + levels[li].metric);
    std::vector<double> ns;
    for (int it = 0; it <= iters; ++it) {
      const uint64_t t0 = NowNs();
      Result<int> code = sys::RunInForkedChild([&] {
        apply(levels[li].sets[it], it + 1);
        return 0;
      });
      if (!code.ok()) return code.status().WithContext("fork_reset baseline");
      if (*code != 0) return Status::Internal("fork_reset child did not exit cleanly");
      if (it > 0) ns.push_back(static_cast<double>(NowNs() - t0));
    }
    fork_ms[li] = Median(ns) / 1e6;
  }

  Progress(opts, "image: checkpoint");
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> cp, Checkpoint::Create(regions));
  double rewind_1pct = 0;
  for (size_t li = 0; li < levels.size(); ++li) {
    Progress(opts, std::string("image: rewind ") + levels[li].metric);
    std::vector<double> ns;
    uint64_t restored = 0;
    for (int it = 0; it <= iters; ++it) {
      apply(levels[li].sets[it], it + 1);
      PW_ASSIGN_OR_RETURN(RewindStats rs, cp->Rewind());
      if (it > 0) ns.push_back(static_cast<double>(rs.elapsed_ns));
      restored = rs.pages_restored;
    }
    const double ms = Median(ns) / 1e6;
    if (std::string(levels[li].metric) == "1pct") rewind_1pct = ms;
    report->Add({"rewind", levels[li].metric, ms, "ms", "fork_reset", fork_ms[li]});
    report->Add({"rewind", levels[li].metric, ms, "ms", "full_copy", full_ns / 1e6});
    report->Add({"rewind_pages", levels[li].metric, static_cast<double>(restored), "pages",
                 "written", static_cast<double>(levels[li].sets.back().size())});
  }
  if (std::memcmp(mem.data(), ref.data(), bytes) != 0) {
    return Status::Internal("bench image: memory differs from the checkpoint after Rewind");
  }
  Progress(opts, "");
  const double zstd_ratio = zstd_snapshot_ns > 0 ? write_ns / zstd_snapshot_ns : 0;
  std::fprintf(stderr, "acceptance: snapshot zstd %.3fx write_raw (>= 1.0): %s\n", zstd_ratio,
               zstd_ratio >= 1.0 ? "PASS" : "FAIL");
  std::fprintf(stderr,
               "acceptance: rewind 1%% = %.3f ms vs fork_reset %.3f ms, full_copy %.3f ms: %s\n",
               rewind_1pct, fork_ms[1], full_ns / 1e6,
               rewind_1pct < fork_ms[1] && rewind_1pct < full_ns / 1e6 ? "PASS" : "FAIL");
  return Status::Ok();
}

BenchRegistration reg("image",
                      "Snapshot/eager-restore GB/s vs write/read/memcpy, checkpoint rewind vs "
                      "fork and full copy, half-zero import storage (1 GiB x scale)",
                      RunImageBench);

}  // namespace
}  // namespace pagewise::bench
