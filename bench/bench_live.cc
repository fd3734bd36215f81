// `pagewise bench live`: a live (userfaultfd write-protect) snapshot of a
// warmed heap while writer threads keep writing, beside a fork()-based
// snapshot of the same heap in the same run (the child writes the image of
// its copy-on-write view while the parent keeps writing).
//
// Writers do random 8-byte stores, each timed with CLOCK_MONOTONIC; the
// latency of a store that hits a protected page (live) or a copy-on-write
// page or the fork() itself (fork) is the writer's stall. Measured per
// snapshot window (start of the snapshot until its image is committed):
// write latency p50/p99/max, writes per second, snapshot time, and extra
// memory: for live, the snapshot's own buffers (LiveSnapshotStats::
// peak_extra_bytes); for fork, the copy-on-write growth = distinct pages
// the parent wrote while the child lived, times the page size. (Both
// exclude the image writer's own index and buffers, which both pay.)
// A window with no snapshot gives the noise floor of the machine.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "bench.h"
#include "pagewise/image.h"
#include "pagewise/live.h"

namespace pagewise::bench {
namespace {

constexpr size_t kGiB = size_t{1} << 30;
constexpr int kWriters = 2;  // one per core of the 2-core reference machine

// Log-linear latency histogram (8 buckets per power of two), lock-free.
class Hist {
 public:
  void Record(uint64_t ns) {
    b_[Bucket(ns)].fetch_add(1, std::memory_order_relaxed);
    n_.fetch_add(1, std::memory_order_relaxed);
    uint64_t m = max_.load(std::memory_order_relaxed);
    while (ns > m && !max_.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {
    }
  }
  uint64_t count() const { return n_.load(); }
  uint64_t max() const { return max_.load(); }
  double Quantile(double q) const {
    const uint64_t n = count();
    if (n == 0) return 0;
    const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * double(n))));
    uint64_t seen = 0;
    for (size_t i = 0; i < b_.size(); ++i) {
      seen += b_[i].load();
      if (seen >= rank) return std::min<double>(static_cast<double>(Upper(i)), double(max()));
    }
    return double(max());
  }

 private:
  static size_t Bucket(uint64_t ns) {
    if (ns < 8) return ns;
    const int msb = 63 - std::countl_zero(ns);
    return std::min<size_t>(511, size_t(msb - 2) * 8 + ((ns >> (msb - 3)) & 7));
  }
  static uint64_t Upper(size_t b) {
    if (b < 8) return b;
    const int msb = int(b / 8) + 2;
    return (1ULL << msb) + ((b % 8 + 1) << (msb - 3)) - 1;
  }
  std::array<std::atomic<uint64_t>, 512> b_{};
  std::atomic<uint64_t> n_{0};
  std::atomic<uint64_t> max_{0};
};

enum Phase { kWarm = 0, kIdle = 1, kLive = 2, kFork = 3, kPhases = 4 };

struct Shared {
  char* heap = nullptr;
  size_t pages = 0;
  size_t page = 4096;
  std::atomic<int> phase{kWarm};
  std::atomic<bool> stop{false};
  Hist hist[kPhases];
  // Distinct pages written per phase (bitmaps).
  std::vector<std::unique_ptr<std::atomic<uint64_t>[]>> written;
};

void Writer(Shared* sh, int id) {
  std::mt19937_64 rng(0x5eed + static_cast<uint64_t>(id));
  while (!sh->stop.load(std::memory_order_relaxed)) {
    const int ph = sh->phase.load(std::memory_order_relaxed);
    const size_t p = static_cast<size_t>(rng() % sh->pages);
    const size_t slot = static_cast<size_t>(rng() % (sh->page / 8));
    uint64_t* w = reinterpret_cast<uint64_t*>(sh->heap + p * sh->page + slot * 8);
    const uint64_t t0 = NowNs();
    // Relaxed atomic: two writers may hit the same word.
    std::atomic_ref<uint64_t>(*w).store(t0, std::memory_order_relaxed);
    const uint64_t t1 = NowNs();
    if (ph != kWarm) {
      sh->hist[ph].Record(t1 - t0);
      sh->written[ph][p / 64].fetch_or(1ULL << (p % 64), std::memory_order_relaxed);
    }
  }
}

uint64_t DistinctPages(const Shared& sh, int ph) {
  uint64_t n = 0;
  for (size_t w = 0; w < (sh.pages + 63) / 64; ++w) n += std::popcount(sh.written[ph][w].load());
  return n;
}

// Writes the image of the caller's view of the heap (the fork child).
Status WriteImage(const std::string& path, const RegionInfo& region, const char* heap) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w, ImageWriter::Create(path));
  PW_ASSIGN_OR_RETURN(uint32_t r, w->AddRegion(region));
  const size_t step = 1 << 20;
  for (uint64_t off = 0; off < region.length; off += step) {
    PW_RETURN_IF_ERROR(w->AddPages(r, off, heap + off, std::min<uint64_t>(step, region.length - off)));
  }
  return w->Commit();
}

struct Window {
  double seconds = 0;
  double p50_us = 0, p99_us = 0, max_ms = 0, writes_per_s = 0;
  double extra_mib = 0;
  uint64_t distinct_pages = 0;
};

Window Summarise(Shared* sh, int ph, double seconds) {
  Window w;
  w.seconds = seconds;
  w.p50_us = sh->hist[ph].Quantile(0.5) / 1e3;
  w.p99_us = sh->hist[ph].Quantile(0.99) / 1e3;
  w.max_ms = double(sh->hist[ph].max()) / 1e6;
  w.writes_per_s = seconds > 0 ? double(sh->hist[ph].count()) / seconds : 0;
  w.distinct_pages = DistinctPages(*sh, ph);
  return w;
}

Status Run(const BenchOptions& opts, BenchReport* report) {
  Shared sh;
  sh.page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t align = 2 << 20;
  const size_t len = std::max(align, static_cast<size_t>(double(kGiB) * opts.scale) / align * align);
  sh.pages = len / sh.page;
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return ErrnoStatus(errno, "mmap of the benchmark heap", "lower --scale");
  sh.heap = static_cast<char*>(mem);
  // A heap of 4 KiB pages (THP would make fork copy 2 MiB per first write).
  madvise(mem, len, MADV_NOHUGEPAGE);
  for (int ph = 0; ph < kPhases; ++ph) {
    sh.written.emplace_back(new std::atomic<uint64_t>[(sh.pages + 63) / 64]());
  }
  // Warm and fill: 1 KiB of pseudo-random bytes per page, the rest zero
  // (compressible like a real heap, no two pages alike).
  Progress(opts, "bench live: warming " + std::to_string(len >> 20) + " MiB");
  std::mt19937_64 fill(42);
  for (size_t p = 0; p < sh.pages; ++p) {
    uint64_t* q = reinterpret_cast<uint64_t*>(sh.heap + p * sh.page);
    for (size_t i = 0; i < 128; ++i) q[i] = fill();
  }
  WarmUp(sh.heap, len);

  char tmpl[] = "/tmp/pagewise-bench-live-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return ErrnoStatus(errno, "mkdtemp for benchmark images");
  const std::string dir = tmpl;
  struct Cleanup {
    std::string dir;
    void* mem;
    size_t len;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      munmap(mem, len);
    }
  } cleanup{dir, mem, len};

  RegionInfo region;
  region.address = reinterpret_cast<uint64_t>(sh.heap);
  region.length = len;
  region.page_size = static_cast<uint32_t>(sh.page);
  region.prot = PROT_READ | PROT_WRITE;
  region.kind = RegionKind::kAnonymous;
  region.name = "heap";

  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i) writers.emplace_back(Writer, &sh, i);
  struct Joiner {
    Shared* sh;
    std::vector<std::thread>* t;
    ~Joiner() {
      sh->stop = true;
      for (auto& x : *t) if (x.joinable()) x.join();
    }
  } joiner{&sh, &writers};

  // Noise floor: writers alone for a while (as long as a small snapshot).
  sh.phase = kIdle;
  uint64_t t0 = NowNs();
  // The window is a fixed number of writes (scaled), timed.
  const uint64_t idle_writes = std::max<uint64_t>(100'000, uint64_t(4e6 * opts.scale));
  while (sh.hist[kIdle].count() < idle_writes) std::this_thread::yield();
  Window idle = Summarise(&sh, kIdle, double(NowNs() - t0) / 1e9);

  // Live snapshot.
  Progress(opts, "bench live: live snapshot");
  LiveSnapshotOptions lo;
  lo.progress_every_pages = 4096;
  lo.progress = [&](const LiveProgress& p) {
    Progress(opts, "bench live: live snapshot " + std::to_string(p.pages_saved * 100 / std::max<uint64_t>(1, p.pages_total)) + "%");
  };
  sh.phase = kLive;
  t0 = NowNs();
  Result<LiveSnapshotStats> ls = TakeLiveSnapshot(dir + "/live.pwi", {region}, lo);
  const double live_s = double(NowNs() - t0) / 1e9;
  sh.phase = kWarm;
  if (!ls.ok()) return ls.status().WithContext("bench live: live snapshot");
  Window live = Summarise(&sh, kLive, live_s);
  live.extra_mib = double(ls->peak_extra_bytes) / double(1 << 20);
  std::filesystem::remove(dir + "/live.pwi");

  // fork() snapshot: the child writes the image of its view.
  Progress(opts, "bench live: fork snapshot");
  sh.phase = kFork;
  t0 = NowNs();
  const pid_t pid = fork();
  if (pid < 0) {
    sh.phase = kWarm;
    return ErrnoStatus(errno, "fork for the baseline snapshot");
  }
  if (pid == 0) {
    // Child: only this thread exists; write the image and leave without
    // running the parent's destructors.
    Status s = WriteImage(dir + "/fork.pwi", region, sh.heap);
    if (!s.ok()) std::fprintf(stderr, "bench live: fork child: %s\n", s.ToString().c_str());
    _exit(s.ok() ? 0 : 1);
  }
  int wstatus = 0;
  pid_t w = -1;
  do {
    w = waitpid(pid, &wstatus, 0);
  } while (w < 0 && errno == EINTR);
  const double fork_s = double(NowNs() - t0) / 1e9;
  sh.phase = kWarm;
  if (w < 0) return ErrnoStatus(errno, "waitpid for the fork snapshot child");
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return Status::IoError("bench live: the fork snapshot child failed (status " +
                           std::to_string(wstatus) + "); see its message above");
  }
  Window fk = Summarise(&sh, kFork, fork_s);
  fk.extra_mib = double(fk.distinct_pages * sh.page) / double(1 << 20);
  Progress(opts, "");

  auto add = [&](const std::string& subject, const std::string& metric, double v,
                 const std::string& unit, double base) {
    report->Add({subject, metric, v, unit, "fork", base});
  };
  add("live", "max_stall_ms", live.max_ms, "ms", fk.max_ms);
  add("live", "p99_write_us", live.p99_us, "us", fk.p99_us);
  add("live", "p50_write_us", live.p50_us, "us", fk.p50_us);
  add("live", "writes_per_s", live.writes_per_s, "1/s", fk.writes_per_s);
  add("live", "extra_memory_mib", live.extra_mib, "MiB", fk.extra_mib);
  add("live", "total_s", live.seconds, "s", fk.seconds);
  add("live", "pages_written", double(live.distinct_pages), "pages", double(fk.distinct_pages));
  add("live", "heap_mib", double(len >> 20), "MiB", double(len >> 20));
  // Context: the machine's noise floor (writers, no snapshot).
  add("no-snapshot", "max_stall_ms", idle.max_ms, "ms", fk.max_ms);
  add("no-snapshot", "p99_write_us", idle.p99_us, "us", fk.p99_us);
  add("no-snapshot", "writes_per_s", idle.writes_per_s, "1/s", fk.writes_per_s);
  // Live snapshot internals, beside the matching fork figure where one
  // exists (fork's "faults" are its copy-on-write copies).
  add("live", "pages_by_fault", double(ls->pages_by_fault), "pages", double(fk.distinct_pages));
  report->Add({"live", "faults_handled", double(ls->faults_handled), "faults", "-", 0});
  report->Add({"live", "fault_service_max_us", double(ls->fault_service_max_ns) / 1e3, "us", "-", 0});
  report->Add({"live", "fault_service_p99_us", double(ls->fault_service_p99_ns) / 1e3, "us", "-", 0});
  return Status::Ok();
}

BenchRegistration reg("live",
                      "Live snapshot (userfaultfd write-protect) of a warmed 1 GiB heap (x scale) "
                      "under random writers, beside a fork() snapshot",
                      Run);

}  // namespace
}  // namespace pagewise::bench
