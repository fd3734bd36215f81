// `pagewise live-demo`: takes a live snapshot of a heap that writer threads
// keep writing, with a progress bar on a terminal, then proves the image
// equals memory at the snapshot instant (the writers are held for the
// instant of Start() only, while a reference copy is taken).
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "command.h"
#include "pagewise/host.h"
#include "pagewise/image.h"
#include "pagewise/live.h"

namespace pagewise::cli {
namespace {

struct DemoOptions {
  size_t size_mib = 256;
  int writers = 2;
  std::string kind = "anon";
  std::string out;
  std::string compression = "zstd";
  bool keep = false;
};

// Writer threads that can be held between batches of writes.
class Writers {
 public:
  Writers(char* base, size_t len, int n) : base_(base), pages_(len / PageSize()) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this, i] { Run(i); });
  }
  ~Writers() { Stop(); }
  void Hold() {
    std::unique_lock<std::mutex> l(mu_);
    held_ = true;
    cv_.wait(l, [&] { return active_ == 0; });
  }
  void Release() {
    {
      std::lock_guard<std::mutex> l(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
      held_ = false;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }
  uint64_t writes() const { return writes_.load(std::memory_order_relaxed); }

 private:
  void Run(int id) {
    std::mt19937_64 rng(static_cast<uint64_t>(id) + 1);
    const size_t page = PageSize();
    uint64_t seq = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return !held_ || stop_; });
        if (stop_) return;
        active_++;
      }
      for (int i = 0; i < 64; ++i) {
        uint64_t* w =
            reinterpret_cast<uint64_t*>(base_ + (rng() % pages_) * page + (rng() % (page / 8)) * 8);
        std::atomic_ref<uint64_t>(*w).store((++seq << 8) | static_cast<uint64_t>(id),
                                            std::memory_order_relaxed);
      }
      writes_.fetch_add(64, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> l(mu_);
        active_--;
      }
      cv_.notify_all();
    }
  }

  char* base_;
  size_t pages_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false, stop_ = false;
  int active_ = 0;
  std::atomic<uint64_t> writes_{0};
};

// Longer than our ~80 lines: the demo's steps in the order it prints them
// (heap and writers, snapshot while they write, pages and fault service,
// image against memory), sharing the heap and the writers.
int RunDemo(const DemoOptions& o) {
  const std::string cmd = "live-demo";
  Result<Compression> comp = ParseCompression(o.compression);
  if (!comp.ok()) return Fail(cmd, comp.status());
  const size_t huge = 2 << 20;
  const size_t len = (o.size_mib << 20) / huge * huge;
  if (len == 0) return Fail(cmd, Status::InvalidArgument("--size-mib must be at least 2"));
  Result<MemoryMapping> heap = Status::InvalidArgument("--kind must be anon, memfd or thp");
  if (o.kind == "memfd") {
    heap = MemoryMapping::Memfd(len, "pagewise-demo");
  } else if (o.kind == "anon" || o.kind == "thp") {
    // 2 MiB aligned, so that thp can back all of it with huge pages.
    heap = MemoryMapping::Anonymous(
        len, {.huge_pages = o.kind == "thp" ? HugePages::kAlways : HugePages::kNever,
              .alignment = huge});
  }
  if (!heap.ok()) {
    if (heap.status().code() == Code::kInvalidArgument) return Fail(cmd, heap.status());
    return Fail(cmd, heap.status().WithContext("the demo heap (lower --size-mib)"));
  }
  char* mem = heap->data();
  const Region region = heap->AsRegion("demo-heap");
  std::mt19937_64 fill(7);
  for (size_t off = 0; off < len; off += PageSize()) {
    uint64_t* q = reinterpret_cast<uint64_t*>(mem + off);
    for (size_t i = 0; i < 64; ++i) q[i] = fill();
  }

  std::string out = o.out;
  TempDirectory tmpdir;  // removed (with the image) on return, unless --keep
  if (out.empty()) {
    Result<TempDirectory> t = TempDirectory::Create("/tmp/pagewise-live-demo-");
    if (!t.ok()) return Fail(cmd, t.status());
    tmpdir = std::move(*t);
    if (o.keep) tmpdir.Keep();
    out = tmpdir.File("demo.pwi");
  }
  const bool tty = StderrIsTerminal();
  LiveSnapshotOptions lo;
  lo.image.compression = *comp;
  // Pages saved on write faults land in the image in fault order; small
  // chunks keep the read-back (one chunk per scattered page) quick.
  lo.image.chunk_bytes = 16 * 1024;
  lo.progress_every_pages = 2048;
  lo.progress = [tty](const LiveProgress& p) {
    if (!tty) return;
    const int width = 40;
    const int fill_w =
        static_cast<int>(p.pages_saved * width / std::max<uint64_t>(1, p.pages_total));
    std::fprintf(stderr, "\r\033[Klive snapshot [%s%s] %3d%%%s", std::string(fill_w, '#').c_str(),
                 std::string(width - fill_w, '.').c_str(),
                 static_cast<int>(p.pages_saved * 100 / std::max<uint64_t>(1, p.pages_total)),
                 p.done ? "\n" : "");
    std::fflush(stderr);
  };

  std::printf("heap: %zu MiB (%s), %d writer threads writing random pages\n", len >> 20,
              o.kind.c_str(), o.writers);
  std::vector<char> reference(len);
  Writers writers(mem, len, o.writers);
  writers.Hold();  // held only for the snapshot instant and the reference copy
  Result<std::unique_ptr<LiveSnapshot>> snap = LiveSnapshot::Start(out, {region}, lo);
  if (snap.ok()) std::memcpy(reference.data(), mem, len);
  const uint64_t writes_at_t = writers.writes();
  writers.Release();
  if (!snap.ok()) return Fail(cmd, snap.status());
  Status s = (*snap)->Wait();
  const uint64_t writes_during = writers.writes() - writes_at_t;
  writers.Stop();
  if (!s.ok()) return Fail(cmd, s);
  const LiveSnapshotStats st = (*snap)->stats();
  std::printf("snapshot: %.3f s (instant T: %.2f ms), %llu writes by the writers meanwhile\n",
              double(st.total_ns) / 1e9, double(st.protect_ns) / 1e6,
              static_cast<unsigned long long>(writes_during));
  std::printf("pages: %llu saved in the background, %llu saved on a write fault first\n",
              static_cast<unsigned long long>(st.pages_background),
              static_cast<unsigned long long>(st.pages_by_fault));
  std::printf("fault service: p50 %.1f us, p99 %.1f us, max %.1f us; extra memory %.1f MiB\n",
              double(st.fault_service_p50_ns) / 1e3, double(st.fault_service_p99_ns) / 1e3,
              double(st.fault_service_max_ns) / 1e3, double(st.peak_extra_bytes) / (1 << 20));

  Result<std::unique_ptr<Image>> img = Image::Open(out);
  if (!img.ok()) return Fail(cmd, img.status());
  std::vector<char> got(len);
  s = (*img)->Read(0, 0, got.data(), len);
  if (!s.ok()) return Fail(cmd, s);
  size_t bad = 0;
  for (size_t off = 0; off < len; off += PageSize()) {
    bad += std::memcmp(got.data() + off, reference.data() + off, PageSize()) != 0;
  }
  std::printf("image %s equals memory at the snapshot instant: %s (%zu of %zu pages differ)\n",
              out.c_str(), bad == 0 ? "yes" : "NO", bad, len / PageSize());
  return bad == 0 ? 0 : 1;
}

CommandRegistration reg(
    "live-demo",
    "Live snapshot of a heap under running writers, with progress, verified "
    "against memory at the snapshot instant",
    [](CLI::App* app) -> RunFn {
      auto o = std::make_shared<DemoOptions>();
      app->add_option("--size-mib", o->size_mib, "Heap size in MiB (default 256)");
      app->add_option("--writers", o->writers, "Writer threads (default 2)")
          ->check(CLI::Range(1, 64));
      app->add_option("--kind", o->kind, "anon, memfd or thp (default anon)");
      app->add_option("--out", o->out, "Image path (default: a temporary file, removed after)");
      app->add_option("--compression", o->compression, "none, zstd or lz4 (default zstd)");
      app->add_flag("--keep", o->keep, "Keep the temporary image");
      return [o]() -> int { return RunDemo(*o); };
    });

}  // namespace
}  // namespace pagewise::cli
