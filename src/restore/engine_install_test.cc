// Installer and FillGate on a real userfaultfd, without the engine's
// threads: two fills into one space at once never install a page twice
// (pieces in flight are skipped), a read of the userfaultfd waits for the
// fill inside the gate and new fills wait for the read, and the faulting
// page's piece goes out first.
#include "restore/engine_install.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "restore/restore_testing.h"
#include "sys/uapi.h"  // UFFDIO_REGISTER_MODE_MISSING for a hand-built space
#include "testing/fault_env.h"

namespace pagewise::restore {
namespace {

using testing::PatternBuffer;
using testing::Ps;

// A latch: Wait() returns once Open() was called.
class Latch {
 public:
  void Open() {
    std::lock_guard<std::mutex> lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Records every UFFDIO_COPY; the first copy of at least `block_pages`
// pages announces itself (`inside`) and waits for `release`.
class CopyHookEnv : public testing::FaultEnv {
 public:
  FillResult UffdCopy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) override {
    bool block = false;
    {
      std::lock_guard<std::mutex> lk(mu);
      copies.push_back({dst, len});
      if (!blocked && len >= block_pages * Ps()) block = blocked = true;
    }
    if (!block) return FaultEnv::UffdCopy(fd, dst, src, len, mode);
    in_blocked_copy = true;
    inside.Open();
    release.Wait();
    const FillResult r = FaultEnv::UffdCopy(fd, dst, src, len, mode);
    in_blocked_copy = false;
    return r;
  }

  size_t block_pages = SIZE_MAX;
  std::atomic<bool> in_blocked_copy{false};
  Latch inside, release;
  std::mutex mu;
  bool blocked = false;
  std::vector<std::pair<uint64_t, uint64_t>> copies;  // guarded by mu
};

class TestHost : public InstallHost {
 public:
  size_t DrainEvents(Space& s) override {
    s.gate.EnterRead();
    const size_t n = DrainEventsHeld(s);
    s.gate.ExitRead();
    return n;
  }
  size_t DrainEventsHeld(Space& s) override {
    UffdEvent ev[16];
    Result<size_t> n = s.uffd.ReadEvents(ev, 16);
    return n.ok() ? *n : 0;
  }
  void Backoff(int*) override { std::this_thread::yield(); }
  void Fail(const Status& st) override { failures.push_back(st); }
  void MarkDeadLocked(Space& s) override {
    s.dead = true;
    s.closed.store(true);
  }
  std::vector<Status> failures;
};

struct Fixture {
  explicit Fixture(size_t pages) : buf(pages, 7), stats(Ps(), 1024, false) {
    void* m = mmap(nullptr, buf.size(), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    mem = static_cast<char*>(m);
    sys::Userfaultfd::Options o;
    o.env = &env;
    Result<sys::Userfaultfd> u = sys::Userfaultfd::Open(o);
    EXPECT_TRUE(u.ok()) << u.status().ToString();
    space.uffd = std::move(*u);
    EXPECT_TRUE(space.uffd.Register(addr(), buf.size(), UFFDIO_REGISTER_MODE_MISSING).ok());
    space.map = SpaceMap(Ps());
    space.map.Add(addr(), buf.size(), 0);
    space.Sync();
    zero.assign(pages, 0);
  }
  ~Fixture() {
    space.uffd = sys::Userfaultfd();
    munmap(mem, buf.size());
  }
  uint64_t addr() const { return reinterpret_cast<uint64_t>(mem); }
  Run Whole() const { return {addr(), 0, buf.pages()}; }

  CopyHookEnv env;
  PatternBuffer buf;
  char* mem = nullptr;
  StatsRecorder stats;
  TestHost host;
  Space space;
  std::vector<uint8_t> zero;  // every page copied (none as zero pages)
};

TEST(EngineInstall, ConcurrentFillsSkipPagesInFlightAndReadsWaitForFills) {
  Fixture f(256);
  f.env.block_pages = 64;
  Installer inst(&f.host, &f.stats, Ps());
  std::atomic<bool> reader_done{false};
  std::atomic<bool> violation{false};

  // Background: pages [0, 128) in pieces of 64; its first piece blocks.
  std::thread background([&] {
    const restore::Run r{f.addr(), 0, 128};
    inst.Install(f.space, r, f.buf.data(), f.zero.data(), FillKind::kBackground, 2, 0, 64, true);
  });
  f.env.inside.Wait();
  {
    std::lock_guard<std::mutex> lk(f.space.mu);
    EXPECT_TRUE(f.space.InFlightOverlaps(f.addr() + 10 * Ps(), 1, Ps()));
  }
  // Demand, meanwhile: pages [0, 96). The first 64 are in flight: skipped,
  // not waited for; [64, 96) installed now, beside the blocked fill.
  const restore::Run demand{f.addr(), 0, 96};
  inst.Install(f.space, demand, f.buf.data(), f.zero.data(), FillKind::kDemand, 1, 10, 16, false);
  {
    std::lock_guard<std::mutex> lk(f.space.mu);
    EXPECT_EQ(f.space.map.Find(f.addr() + 10 * Ps()).state, PageState::kUnfilled);
    EXPECT_EQ(f.space.map.Find(f.addr() + 64 * Ps()).state, PageState::kFilled);
    EXPECT_EQ(f.space.map.Find(f.addr() + 95 * Ps()).state, PageState::kFilled);
  }
  // A read now must wait for the blocked fill to leave the gate.
  std::thread reader([&] {
    f.space.gate.EnterRead();
    violation = f.env.in_blocked_copy.load();
    reader_done = true;  // (before leaving: a fill entering after must see it)
    f.space.gate.ExitRead();
  });
  while (!f.space.gate.read_pending()) std::this_thread::yield();
  // A new fill arriving while the read waits goes after it.
  std::atomic<bool> late_fill_saw_reader_done{false};
  std::thread late([&] {
    f.space.gate.EnterFill();
    late_fill_saw_reader_done = reader_done.load();
    f.space.gate.ExitFill();
  });
  f.env.release.Open();
  background.join();
  reader.join();
  late.join();
  EXPECT_FALSE(violation.load()) << "a read ran while a fill was inside the gate";
  EXPECT_TRUE(late_fill_saw_reader_done.load()) << "a new fill overtook a waiting read";
  // [0, 128) installed exactly once, [128, 256) untouched.
  const RestoreStats st = f.stats.Snapshot();
  EXPECT_EQ(st.eexist_pages, 0u);
  EXPECT_EQ(st.pages_demand + st.pages_background, 128u);
  EXPECT_EQ(st.pages_demand, 32u);
  for (size_t i = 0; i < 128; ++i) ASSERT_TRUE(f.buf.Matches(f.mem + i * Ps(), i)) << i;
  EXPECT_EQ(f.space.map.unfilled(), 128u);
  EXPECT_TRUE(f.host.failures.empty());
}

TEST(EngineInstall, FaultingPagesPieceGoesFirst) {
  Fixture f(64);
  Installer inst(&f.host, &f.stats, Ps());
  // A 64-page run in pieces of 8, faulting page 43: the first ioctl holds
  // page 43, the rest follow.
  inst.Install(f.space, f.Whole(), f.buf.data(), f.zero.data(), FillKind::kDemand, 1, 43, 8, false);
  std::lock_guard<std::mutex> lk(f.env.mu);
  ASSERT_FALSE(f.env.copies.empty());
  const uint64_t first = f.env.copies[0].first, first_len = f.env.copies[0].second;
  EXPECT_LE(first, f.addr() + 43 * Ps());
  EXPECT_GT(first + first_len, f.addr() + 43 * Ps());
  uint64_t total = 0;
  for (const auto& c : f.env.copies) total += c.second;
  EXPECT_EQ(total, 64 * Ps());
  for (size_t i = 0; i < 64; ++i) ASSERT_TRUE(f.buf.Matches(f.mem + i * Ps(), i)) << i;
}

}  // namespace
}  // namespace pagewise::restore
