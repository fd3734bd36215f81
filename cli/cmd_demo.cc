// `pagewise demo`: the whole story on an embedded default, through the public
// API only.
//   1. probe the kernel; check the never-lose-a-write guarantee briefly;
//   2. a multi-threaded workload mutates a heap of a few hundred MiB;
//   3. a live snapshot (copy before write) is taken while it runs, then
//      incremental layers from the write tracker; writers stop before the last;
//   4. the chain is verified; a NEW process (this binary re-executed as a
//      Firecracker-style client) lazily restores it from `pagewise serve`'s
//      server, first recording its working set, then again with prefetch;
//   5. every restored byte is compared (by digest) with the heap; a report.
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "command.h"
#include "pagewise/check.h"
#include "pagewise/host.h"
#include "pagewise/image.h"
#include "pagewise/live.h"
#include "pagewise/probe.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "pagewise/snapshot.h"
#include "pagewise/tracker.h"
#include "progress.h"

namespace pagewise::cli {
namespace {

const size_t kPage = PageSize();

double Secs(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
double MiB(uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

// A 64-bit digest of memory, page by page (order-sensitive), so two processes
// can compare hundreds of MiB by exchanging eight bytes.
uint64_t Digest(const char* p, size_t len) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (size_t off = 0; off < len; off += 8) {
    uint64_t w;
    std::memcpy(&w, p + off, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
  }
  return h;
}

// The workload: writers stamp random pages; a fraction of writes copy a
// template page (duplicates) or clear a page (zeros), like a real heap.
class Workload {
 public:
  Workload(char* heap, size_t len, int threads) : heap_(heap), len_(len) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t] { Run(static_cast<uint64_t>(t) + 1); });
    }
  }
  ~Workload() { Stop(); }
  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  uint64_t writes() const { return writes_.load(std::memory_order_relaxed); }
  // Waits (polling the counter the writers publish) until `n` more writes.
  void WaitWrites(uint64_t n) const {
    const uint64_t target = writes() + n;
    while (writes() < target && !stop_.load()) std::this_thread::yield();
  }

 private:
  void Run(uint64_t seed) {
    std::mt19937_64 rng(seed);
    const size_t pages = len_ / kPage;
    uint64_t local = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
      char* page = heap_ + (rng() % pages) * kPage;
      const uint64_t kind = rng() % 16;
      if (kind == 0) {
        std::memset(page, 0, kPage);
      } else if (kind < 4) {
        std::memset(page, static_cast<int>(kind), kPage);  // duplicate content
      } else {
        for (int i = 0; i < 8; ++i) {
          uint64_t v = rng();
          std::memcpy(page + (rng() % (kPage / 8)) * 8, &v, 8);
        }
      }
      if (++local % 64 == 0) writes_.fetch_add(64, std::memory_order_relaxed);
    }
  }

  char* heap_;
  size_t len_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> writes_{0};
  std::vector<std::thread> threads_;
};

// The restoring client (a separate process): maps fresh memory, hands it to
// the server with Firecracker's handshake, waits for the server's ready
// byte (its prefetch list is in), touches a working set first (as a
// resuming program would), then everything; prints its digest.
int RunClient(const std::string& socket, uint64_t size, uint64_t ws_seed) {
  Result<MemoryMapping> mem = MemoryMapping::Anonymous(size, {.huge_pages = HugePages::kNever});
  if (!mem.ok()) return Fail("demo client", mem.status());
  Region region;
  region.address = reinterpret_cast<uint64_t>(mem->data());
  region.length = size;
  region.offset = 0;
  region.page_size = kPage;
  auto t0 = std::chrono::steady_clock::now();
  LazyClientOptions lo;
  lo.wait_ready = std::chrono::seconds(10);  // a server without a prefetch list answers at once
  Result<std::unique_ptr<LazyClient>> client = LazyClient::Connect(socket, {region}, lo);
  if (!client.ok()) return Fail("demo client", client.status());
  const char* p = mem->data();
  // Working set: 48 clusters of 32 pages, the same every run (ws_seed).
  std::mt19937_64 rng(ws_seed);
  const size_t pages = size / kPage;
  volatile uint64_t sink = 0;
  for (int c = 0; c < 48; ++c) {
    size_t start = rng() % (pages - 32);
    for (size_t i = 0; i < 32; ++i) sink = sink + p[(start + i) * kPage];
  }
  const double ws_ms = Secs(t0) * 1e3;
  Status st = (*client)->Populate();
  if (!st.ok()) return Fail("demo client", st);
  const uint64_t digest = Digest(p, size);
  std::printf("%016" PRIx64 " %.3f %.3f %d\n", digest, ws_ms, Secs(t0) * 1e3,
              (*client)->ready() ? 1 : 0);
  return 0;
}

struct ClientRun {
  uint64_t digest = 0;
  double ws_ms = 0, total_ms = 0;
  int ready = 0;  // the client saw the server's ready byte
  RestoreStats stats;
};

// Serves `image` to one client process (this binary, re-executed).
Result<ClientRun> RestoreInNewProcess(const std::string& image_path, const std::string& socket,
                                      uint64_t size, const ServeOptions& serve_opts,
                                      WorkingSetTrace* trace) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> img, Image::Open(image_path));
  std::shared_ptr<const Image> image(std::move(img));
  PW_ASSIGN_OR_RETURN(auto server, PageServer::Start(socket, ImageSource(image), serve_opts));
  PW_ASSIGN_OR_RETURN(ProgramOutput client,
                      RunProgram("/proc/self/exe", {"demo-client", "--socket", socket, "--size",
                                                    std::to_string(size)}));
  if (client.exit_status != 0) {
    return Status::Internal("the restoring client process failed (exit status " +
                            std::to_string(client.exit_status) + "); see its message above");
  }
  const std::string& text = client.stdout_text;
  PW_RETURN_IF_ERROR(server->WaitClientsDone(1, std::chrono::seconds(30)));
  ClientRun run;
  if (std::sscanf(text.c_str(), "%" SCNx64 " %lf %lf %d", &run.digest, &run.ws_ms, &run.total_ms,
                  &run.ready) != 4) {
    return Status::Internal("unexpected client output: " + text);
  }
  std::vector<ClientReport> clients = server->clients();
  if (!clients.empty()) run.stats = clients.back().stats;
  if (trace) *trace = server->trace();
  server->Stop();
  return run;
}

// Longer than our ~80 lines on purpose: the demo's story in the order a
// user reads its numbered output (kernel and guarantee check, workload,
// live snapshot and layers, lazy restore, comparison); the steps share the
// heap and the directory.
Status RunDemo(uint64_t size, int threads, const std::string& dir_arg, bool keep) {
  const auto t_demo = std::chrono::steady_clock::now();
  const KernelFeatures& f = Features();
  std::printf("== 1. kernel %s\n", f.kernel_release.c_str());
  for (const BackendInfo& b : DescribeBackends(f)) {
    std::printf("   %-14s %s%s%s\n", b.name.c_str(), b.available ? "available" : "unavailable",
                b.atomic ? ", atomic" : "", b.reason.empty() ? "" : (": " + b.reason).c_str());
  }
  CheckOptions co;
  co.backend = TrackBackend::kAuto;
  co.threads = 4;
  co.duration = std::chrono::seconds(1);
  co.size = 32 << 20;
  PW_ASSIGN_OR_RETURN(CheckResult check, RunCheck(co));
  std::printf("   guarantee check (%s, %d threads, 1 s): %" PRIu64 " writes, %" PRIu64
              " collects, lost writes %" PRIu64 " -> %s\n",
              check.backend.c_str(), co.threads, check.writes, check.rounds, check.lost_writes,
              check.ok ? "OK" : "FAILED");
  if (!check.ok) return Status::Internal("the tracking guarantee check lost writes");

  std::string dir = dir_arg;
  TempDirectory tmp;  // removed when the demo ends, unless kept
  if (dir.empty()) {
    PW_ASSIGN_OR_RETURN(tmp, TempDirectory::Create("/tmp/pagewise-demo-"));
    if (keep) tmp.Keep();
    dir = tmp.path();
  }
  std::filesystem::create_directories(dir);

  // ---- 2. the workload ---------------------------------------------------
  std::printf("== 2. workload: %d writer threads mutating a %.0f MiB heap\n", threads, MiB(size));
  Result<MemoryMapping> heap_mem =
      MemoryMapping::Anonymous(size, {.huge_pages = HugePages::kNever});
  if (!heap_mem.ok()) return heap_mem.status().WithContext("the demo heap");
  char* heap = heap_mem->data();
  {
    std::mt19937_64 rng(7);  // initial content: 1/3 zero, 1/3 duplicate, 1/3 random
    for (size_t off = 0; off < size; off += kPage) {
      const uint64_t k = rng() % 3;
      if (k == 1)
        std::memset(heap + off, 0x5a, kPage);
      else if (k == 2)
        for (size_t i = 0; i < kPage; i += 8) {
          uint64_t v = rng();
          std::memcpy(heap + off + i, &v, 8);
        }
    }
  }
  std::vector<Region> regions = {heap_mem->AsRegion("heap")};
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Tracker> tracker, Tracker::Create({TrackBackend::kUffdWp}));
  PW_RETURN_IF_ERROR(tracker->Track(heap, size));
  Workload work(heap, size, threads);
  work.WaitWrites(10000);

  // ---- 3. live snapshot + layers ------------------------------------------
  const std::string base = dir + "/heap.0.pwimg";
  LiveSnapshotOptions lo;
  lo.tracker = tracker.get();
  lo.image.compression = Compression::kLz4;
  ProgressBar bar("   live snapshot", size / kPage);
  lo.progress = [&bar](const LiveProgress& p) { bar.Update(p.pages_saved); };
  const uint64_t writes_before = work.writes();
  auto t_live = std::chrono::steady_clock::now();
  PW_ASSIGN_OR_RETURN(LiveSnapshotStats live, TakeLiveSnapshot(base, regions, lo));
  bar.Finish();
  const double live_s = Secs(t_live);
  std::printf("== 3. live snapshot: %.0f MiB in %.2f s (%.0f MiB/s) while %" PRIu64
              " writes went on; %" PRIu64 " pages saved before a write, max writer stall %.2f ms\n",
              MiB(size), live_s, MiB(size) / live_s, work.writes() - writes_before,
              live.pages_by_fault, static_cast<double>(live.fault_service_max_ns) / 1e6);
  std::string head = base;
  const int kLayers = 3;
  for (int i = 1; i <= kLayers; ++i) {
    if (i < kLayers) {
      work.WaitWrites(20000);
    } else {
      work.Stop();  // the last layer captures the final state exactly
    }
    std::vector<PageRange> written;
    PW_RETURN_IF_ERROR(tracker->Collect(&written));
    const std::string layer = dir + "/heap." + std::to_string(i) + ".pwimg";
    SnapshotOptions so;
    so.compression = Compression::kLz4;
    PW_ASSIGN_OR_RETURN(SnapshotStats ls, SnapshotIncremental(written, regions, head, layer, so));
    std::printf("   layer %d: %" PRIu64 " pages written since its parent, %.1f MiB on disk%s\n", i,
                ls.image.pages, MiB(ls.image.file_bytes), i == kLayers ? " (writers stopped)" : "");
    head = layer;
  }
  const uint64_t want = Digest(heap, size);

  // ---- 4. verify and restore lazily in a new process ------------------------
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> chain, Image::Open(head));
  PW_RETURN_IF_ERROR(chain->Verify());
  uint64_t disk = 0;
  for (const LayerInfo& l : chain->layers()) disk += l.stats.file_bytes;
  const ImageStats& b = chain->layers().back().stats;
  std::printf(
      "== 4. chain of %zu images verified: %.1f MiB on disk for a %.0f MiB heap "
      "(base: %" PRIu64 " zero, %" PRIu64 " duplicate, %" PRIu64 " stored pages)\n",
      chain->layers().size(), MiB(disk), MiB(size), b.zero_pages, b.duplicate_pages,
      b.stored_pages);
  const std::string socket = dir + "/serve.sock";
  // Both runs record the client's demand faults: the pages they brought in
  // while the client touched its working set (the trace's first ws_ms; the
  // server's clock starts at the handshake, after the client's, so the cut
  // keeps every working-set fault) are the working set, and what the
  // prefetch is measured by. Populate() afterwards faults in the rest.
  auto ws_pages = [](const WorkingSetTrace& t, double ws_ms, std::vector<uint64_t>* out) {
    size_t n = 0;
    for (const TraceEntry& e : t.entries) {
      if (static_cast<double>(e.time_ns) / 1e6 > ws_ms) continue;
      if (out != nullptr) out->push_back(e.offset);
      n++;
    }
    return n;
  };
  ServeOptions record;
  record.fill.record_trace = true;
  WorkingSetTrace cold_trace, warm_trace;
  PW_ASSIGN_OR_RETURN(ClientRun cold, RestoreInNewProcess(head, socket, size, record, &cold_trace));
  ServeOptions replay = record;
  const size_t cold_ws = ws_pages(cold_trace, cold.ws_ms, &replay.fill.prefetch);
  PW_ASSIGN_OR_RETURN(ClientRun warm, RestoreInNewProcess(head, socket, size, replay, &warm_trace));
  const size_t warm_ws = ws_pages(warm_trace, warm.ws_ms, nullptr);
  const bool match = cold.digest == want && warm.digest == want;
  std::printf(
      "   new process, no prefetch:   working set in %.1f ms, %zu pages faulted in while "
      "touching it; resident in %.0f ms\n",
      cold.ws_ms, cold_ws, cold.total_ms);
  std::printf(
      "   new process, with prefetch: working set in %.1f ms, %zu pages faulted in while "
      "touching it; resident in %.0f ms\n",
      warm.ws_ms, warm_ws, warm.total_ms);
  std::printf("      %zu recorded pages installed before the client resumed (%s); %" PRIu64
              " of them faulted first\n",
              cold_ws,
              warm.ready ? "it waited for the server's ready byte"
                         : "NO ready byte: the client raced the prefetch",
              warm.stats.prefetch_late_faults);

  // ---- 5. report --------------------------------------------------------------
  std::printf("== 5. restored content %s the heap (digest %016" PRIx64 "); demo took %.1f s\n",
              match ? "matches" : "DOES NOT MATCH", want, Secs(t_demo));
  if (keep || !dir_arg.empty()) {
    std::printf("   images kept in %s\n", dir.c_str());
  } else {
    tmp.Remove().IgnoreError();  // as before: a directory that will not go is left behind
  }
  tracker.reset();
  heap_mem->Unmap().IgnoreError();  // the demo's result does not depend on it
  if (!match) return Status::Corruption("a lazily restored process saw different memory");
  return Status::Ok();
}

CommandRegistration reg(
    "demo", "Snapshot a live multi-threaded heap and restore it lazily",
    [](CLI::App* app) -> RunFn {
      struct Opts {
        uint64_t size = 256ull << 20;
        int threads = 2;
        std::string dir;
        bool keep = false;
      };
      auto o = std::make_shared<Opts>();
      app->add_option("--size", o->size, "Heap bytes")->transform(CLI::AsSizeValue(false));
      app->add_option("--threads", o->threads, "Writer threads")->check(CLI::Range(1, 64));
      app->add_option("--dir", o->dir, "Keep the images in DIR");
      app->add_flag("--keep", o->keep, "Keep the temporary images");
      return [o]() -> int {
        if (o->size < (64ull << 20) || o->size % kPage != 0) {
          return Fail("demo",
                      Status::InvalidArgument("--size must be a page multiple of at least 64M"));
        }
        Status st = RunDemo(o->size, o->threads, o->dir, o->keep);
        return st.ok() ? 0 : Fail("demo", st);
      };
    });

CommandRegistration client_reg("demo-client", "(internal) the demo's restoring process",
                               [](CLI::App* app) -> RunFn {
                                 auto socket = std::make_shared<std::string>();
                                 auto size = std::make_shared<uint64_t>(0);
                                 app->add_option("--socket", *socket)->required();
                                 app->add_option("--size", *size)->required();
                                 app->group("");  // hidden from --help
                                 return [socket, size]() -> int {
                                   return RunClient(*socket, *size, 42);
                                 };
                               });

}  // namespace
}  // namespace pagewise::cli
