// LazyRestore while the restored program forks, mremaps, drops and unmaps
// its memory and faults from many threads; and with the kernel's answers
// perturbed (EAGAIN with partial copies, reordered and duplicated events)
// through FaultEnv. Every test runs the real system calls during restore.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/restore.h"
#include "restore/restore_env.h"
#include "restore/restore_testing.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::PatternBuffer;
using testing::Ps;

constexpr int kFailureTimeoutMs = 120000;  // only ever a failure detector
constexpr Duration kFailureTimeout = std::chrono::milliseconds(kFailureTimeoutMs);

// Expected content of page i after the program dropped [drop_lo, drop_hi).
bool PageOk(const char* p, const PatternBuffer& buf, size_t i, size_t drop_lo, size_t drop_hi) {
  if (i >= drop_lo && i < drop_hi) return testing::AllZero(p, Ps());
  return buf.Matches(p, i);
}

std::unique_ptr<LazyRestore> StartOrDie(const PatternBuffer& buf, const RestoreOptions& o,
                                        Env* env = Env::Default()) {
  auto r = StartLazyRestore(MemorySource(buf.data(), buf.size()), {{0, buf.size(), 0}}, o, env);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

// Reads an int from fd, failing (rather than hanging) after a long time.
bool ReadIntWithin(int fd, int* out) {
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, kFailureTimeoutMs) != 1) return false;
  return read(fd, out, sizeof(*out)) == static_cast<ssize_t>(sizeof(*out));
}

// The child after fork: checks the restored content (with [lo, hi)
// dropped before the fork), writes its own pattern, checks it, reports the
// number of bad pages. Only async-signal-safe work: the parent has threads.
[[noreturn]] void ChildCheck(const char* mem, const PatternBuffer& buf, size_t lo, size_t hi,
                             uint64_t seed, int report_fd) {
  int bad = 0;
  for (size_t i = 0; i < buf.pages(); ++i) {
    if (!PageOk(mem + i * Ps(), buf, i, lo, hi)) bad++;
  }
  char* w = const_cast<char*>(mem);
  for (size_t i = 0; i < buf.pages(); ++i) testing::FillPage(w + i * Ps(), seed, i);
  for (size_t i = 0; i < buf.pages(); ++i) {
    if (!testing::PageMatches(mem + i * Ps(), seed, i)) bad++;
  }
  ssize_t n = write(report_fd, &bad, sizeof(bad));
  _exit(n == sizeof(bad) ? 0 : 1);
}

TEST(RestoreEvents, ForkServesChildIdenticalContentThenBothDiverge) {
  PatternBuffer buf(384, 21);
  for (int rep = 0; rep < 4; ++rep) {
    RestoreOptions o;
    // Even reps: only faults fill, so the fork surely happens mid-restore.
    // Odd reps: the filler races the fork; the userfaultfd is kept after
    // residency so that the fork is still reported if the filler won.
    o.fill.background_fill = rep % 2 == 1;
    o.release_when_resident = false;
    o.fill.background_batch_pages = 8;
    auto r = StartOrDie(buf, o);
    ASSERT_NE(r, nullptr);
    char* mem = r->data(0);
    // Part filled, part dropped, the rest untouched when the fork happens.
    for (size_t i = 0; i < 64; ++i) ASSERT_TRUE(buf.Matches(mem + i * Ps(), i));
    ASSERT_EQ(madvise(mem + 100 * Ps(), 20 * Ps(), MADV_DONTNEED), 0);
    int pfd[2];
    ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) ChildCheck(mem, buf, 100, 120, 1000 + rep, pfd[1]);
    close(pfd[1]);
    size_t bad = 0;
    for (size_t i = 0; i < buf.pages(); ++i) {
      if (!PageOk(mem + i * Ps(), buf, i, 100, 120)) bad++;
    }
    for (size_t i = 0; i < buf.pages(); ++i) testing::FillPage(mem + i * Ps(), 2000 + rep, i);
    int child_bad = -1;
    EXPECT_TRUE(ReadIntWithin(pfd[0], &child_bad)) << "child did not report";
    close(pfd[0]);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    EXPECT_EQ(bad, 0u) << "rep " << rep;
    EXPECT_EQ(child_bad, 0) << "rep " << rep;
    // The parent still sees its own writes, not the child's.
    for (size_t i = 0; i < buf.pages(); ++i) {
      if (!testing::PageMatches(mem + i * Ps(), 2000 + rep, i)) bad++;
    }
    EXPECT_EQ(bad, 0u);
    ASSERT_TRUE(r->Finish().ok());
    const RestoreStats st = r->stats();
    EXPECT_GE(st.forks, 1u);
    EXPECT_GE(st.spaces_total, 2u);
    EXPECT_GE(st.removes, 1u);
  }
}

TEST(RestoreEvents, MremapOfPartlyRestoredRangeCarriesContent) {
  PatternBuffer buf(128, 22);
  for (int rep = 0; rep < 3; ++rep) {
    RestoreOptions o;
    o.fill.background_fill = rep == 2;
    o.release_when_resident = false;  // the REMAP is reported even if the filler won
    o.fill.fault_window_pages = 4;
    auto r = StartOrDie(buf, o);
    ASSERT_NE(r, nullptr);
    r->Release();  // this test moves and unmaps the memory itself
    char* mem = r->data(0);
    ASSERT_TRUE(buf.Matches(mem + 10 * Ps(), 10));  // pages 8..11 filled
    // Move pages [8, 40) (4 filled, 28 not) over a placeholder.
    void* hole = mmap(nullptr, 32 * Ps(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(hole, MAP_FAILED);
    void* moved = mremap(mem + 8 * Ps(), 32 * Ps(), 32 * Ps(), MREMAP_MAYMOVE | MREMAP_FIXED, hole);
    ASSERT_EQ(moved, hole);
    char* mv = static_cast<char*>(moved);
    size_t bad = 0;
    for (size_t k = 0; k < 32; ++k) {
      EXPECT_TRUE(buf.Matches(mv + k * Ps(), 8 + k)) << "moved page " << k;
      bad += !buf.Matches(mv + k * Ps(), 8 + k);
    }
    for (size_t i = 0; i < 8; ++i) bad += !buf.Matches(mem + i * Ps(), i);
    // Grow the tail [40, 128) to 100 pages, wherever it lands: its first 88
    // pages follow it, the 12 new ones are fresh (zero).
    void* grown = mremap(mem + 40 * Ps(), 88 * Ps(), 100 * Ps(), MREMAP_MAYMOVE);
    ASSERT_NE(grown, MAP_FAILED);
    char* g = static_cast<char*>(grown);
    const bool in_place = g == mem + 40 * Ps();
    for (size_t k = 0; k < 88; ++k) {
      EXPECT_TRUE(buf.Matches(g + k * Ps(), 40 + k))
          << "grown page " << k << " in place " << in_place;
      bad += !buf.Matches(g + k * Ps(), 40 + k);
    }
    for (size_t k = 88; k < 100; ++k) {
      EXPECT_TRUE(testing::AllZero(g + k * Ps(), Ps()))
          << "new page " << k << " in place " << in_place;
      bad += !testing::AllZero(g + k * Ps(), Ps());
    }
    EXPECT_EQ(bad, 0u) << "rep " << rep;
    ASSERT_TRUE(r->Finish().ok());
    EXPECT_GE(r->stats().remaps, 1u);
    munmap(mem, 8 * Ps());
    munmap(mv, 32 * Ps());
    munmap(g, 100 * Ps());
  }
}

TEST(RestoreEvents, DontneedDuringRestoreReadsZerosNeverSourceData) {
  for (int rep = 0; rep < 5; ++rep) {
    PatternBuffer buf(1024, 30 + rep);
    RestoreOptions o;
    // Even reps: nothing but faults fills before Finish(), so unfilled pages
    // are dropped for sure. Odd reps: the filler races the madvise calls.
    o.fill.background_fill = rep % 2 == 1;
    o.release_when_resident = false;
    o.fill.background_batch_pages = 16;
    auto r = StartOrDie(buf, o);
    ASSERT_NE(r, nullptr);
    char* mem = r->data(0);
    for (size_t i = 0; i < 32; ++i) ASSERT_TRUE(buf.Matches(mem + i * Ps(), i));
    ASSERT_EQ(madvise(mem + 16 * Ps(), 64 * Ps(), MADV_DONTNEED), 0);    // filled + not
    ASSERT_EQ(madvise(mem + 700 * Ps(), 200 * Ps(), MADV_DONTNEED), 0);  // likely not yet
    auto check = [&] {
      size_t bad = 0;
      for (size_t i = 0; i < buf.pages(); ++i) {
        const bool dropped = (i >= 16 && i < 80) || (i >= 700 && i < 900);
        if (dropped ? !testing::AllZero(mem + i * Ps(), Ps()) : !buf.Matches(mem + i * Ps(), i)) {
          bad++;
        }
      }
      return bad;
    };
    EXPECT_EQ(check(), 0u) << "rep " << rep;
    ASSERT_TRUE(r->WaitResident(kFailureTimeout).ok());
    EXPECT_EQ(check(), 0u) << "rep " << rep << " after resident";
    // A dropped page is ordinary memory again.
    testing::FillPage(mem + 750 * Ps(), 5, 750);
    EXPECT_TRUE(testing::PageMatches(mem + 750 * Ps(), 5, 750));
    ASSERT_TRUE(r->Finish().ok());
    EXPECT_EQ(check(), 1u) << "only page 750, which we wrote, differs";
    EXPECT_GE(r->stats().removes, 2u);
  }
}

// A memory source whose reads at or beyond `gate` wait until Open(): the
// background filler then cannot make everything resident (which releases
// the userfaultfd, so that a later munmap sends no UNMAP event) before the
// test has done what it must do during the restore. Reads are without the
// engine's locks, so a waiting read holds up nothing else.
class GatedSource final : public PageSource {
 public:
  GatedSource(const PatternBuffer& buf, uint64_t gate)
      : inner_(MemorySource(buf.data(), buf.size())), gate_(gate) {}
  uint64_t size() const override { return inner_->size(); }
  Status Read(uint64_t offset, void* dst, size_t len) const override {
    if (offset + len > gate_) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return open_; });
    }
    return inner_->Read(offset, dst, len);
  }
  std::string Describe() const override { return "gated " + inner_->Describe(); }
  void Open() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::shared_ptr<PageSource> inner_;
  const uint64_t gate_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool open_ = false;
};

TEST(RestoreEvents, MunmapDuringRestoreStopsFillingThatRange) {
  for (int rep = 0; rep < 4; ++rep) {
    PatternBuffer buf(1024, 40 + rep);
    RestoreOptions o;
    o.fill.background_fill = rep % 2 == 0;
    o.fill.background_batch_pages = 16;
    // Pages from 600 on wait for the gate: the restore cannot be complete
    // (and its userfaultfd released) before the munmap.
    auto gated = std::make_shared<GatedSource>(buf, 600 * Ps());
    auto started = LazyRestore::Start(gated, {{0, buf.size(), 0}}, o);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    std::unique_ptr<LazyRestore> r = std::move(*started);
    r->Release();  // this test unmaps the memory itself
    char* mem = r->data(0);
    ASSERT_TRUE(buf.Matches(mem + 300 * Ps(), 300));
    ASSERT_EQ(munmap(mem + 256 * Ps(), 256 * Ps()), 0);
    gated->Open();
    ASSERT_TRUE(r->Finish().ok());
    size_t bad = 0;
    for (size_t i = 0; i < buf.pages(); ++i) {
      if (i >= 256 && i < 512) continue;
      bad += !buf.Matches(mem + i * Ps(), i);
    }
    EXPECT_EQ(bad, 0u);
    const RestoreStats st = r->stats();
    EXPECT_GE(st.unmaps, 1u);
    // Every page still mapped was installed once; of the unmapped range only
    // what was filled before the munmap.
    EXPECT_GE(st.pages_demand + st.pages_background, 768u);
    EXPECT_LE(st.pages_demand + st.pages_background, 1024u);
    EXPECT_EQ(st.eexist_pages, 0u);
    munmap(mem, 256 * Ps());
    munmap(mem + 512 * Ps(), 512 * Ps());
  }
}

void ReadAllFromThreads(const char* mem, const PatternBuffer& buf, int threads,
                        std::atomic<size_t>* bad) {
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      const size_t n = buf.pages();
      // Different orders: forward, backward, and strided from an offset.
      for (size_t k = 0; k < n; ++k) {
        size_t i = t % 3 == 0 ? k : t % 3 == 1 ? n - 1 - k : (k * 7 + static_cast<size_t>(t)) % n;
        if (!buf.Matches(mem + i * Ps(), i)) (*bad)++;
      }
    });
  }
  for (auto& t : ts) t.join();
}

TEST(RestoreEvents, ManyThreadsFaultingOnTheSamePages) {
  PatternBuffer buf(1024, 50);
  for (int rep = 0; rep < 4; ++rep) {
    RestoreOptions o;
    o.fill.background_fill = rep % 2 == 1;
    o.fill.fault_window_pages = rep < 2 ? 1 : 32;
    auto r = StartOrDie(buf, o);
    ASSERT_NE(r, nullptr);
    std::atomic<size_t> bad{0};
    ReadAllFromThreads(r->data(0), buf, 6, &bad);
    EXPECT_EQ(bad.load(), 0u) << "rep " << rep;
    ASSERT_TRUE(r->Finish().ok());
    const RestoreStats st = r->stats();
    EXPECT_EQ(st.pages_demand + st.pages_background, 1024u);
    EXPECT_EQ(st.eexist_pages, 0u) << "a page was installed twice";
  }
}

TEST(RestoreEvents, EagainWithPartialCopiesRetriesOnlyTheRemainder) {
  PatternBuffer buf(1024, 60);
  for (int rep = 0; rep < 3; ++rep) {
    testing::FaultEnv env;
    env.Inject(testing::Op::kUffdCopy,
               {.error = EAGAIN, .partial_bytes = 2 * Ps(), .skip = 1, .count = 40});
    env.Inject(testing::Op::kUffdZeropage,
               {.error = EAGAIN, .partial_bytes = 0, .skip = 2, .count = 10});
    RestoreOptions o;
    o.fill.background_fill = rep != 0;
    o.fill.background_batch_pages = 32;
    auto r = StartOrDie(buf, o, &env);
    ASSERT_NE(r, nullptr);
    std::atomic<size_t> bad{0};
    ReadAllFromThreads(r->data(0), buf, 3, &bad);
    EXPECT_EQ(bad.load(), 0u);
    ASSERT_TRUE(r->Finish().ok());
    const RestoreStats st = r->stats();
    EXPECT_EQ(env.Fired(testing::Op::kUffdCopy), 40);
    EXPECT_GE(st.eagain_retries, 40u);
    // Retrying more than the remainder would have hit pages already copied.
    EXPECT_EQ(st.eexist_pages, 0u);
    EXPECT_EQ(st.bytes_copied + st.zero_pages * Ps(), buf.size());
  }
}

TEST(RestoreEvents, ReorderedAndDuplicatedMessagesKeepContentExact) {
  for (int rep = 0; rep < 3; ++rep) {
    PatternBuffer buf(768, 70 + rep);
    testing::FaultEnv env;
    // Reverse every batch (faults then come after the events that were
    // queued behind them) and repeat one page fault per batch.
    env.SetReadFilter([](UffdEvent* ev, size_t* n, size_t max) {
      std::reverse(ev, ev + *n);
      for (size_t i = 0; i < *n && *n < max; ++i) {
        if (ev[i].kind == UffdEvent::Kind::kPagefault) {
          ev[(*n)++] = ev[i];
          break;
        }
      }
    });
    RestoreOptions o;
    o.fill.background_batch_pages = 8;
    o.fill.fault_window_pages = 2;
    auto r = StartOrDie(buf, o, &env);
    ASSERT_NE(r, nullptr);
    char* mem = r->data(0);
    std::atomic<size_t> bad{0};
    std::thread dropper([&] {
      // Concurrent events while readers fault: drop, then move a range.
      if (madvise(mem + 200 * Ps(), 40 * Ps(), MADV_DONTNEED) != 0) bad += 1000;
    });
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t) {
      readers.emplace_back([&, t] {
        for (size_t k = 0; k < buf.pages(); ++k) {
          const size_t i = (k * 5 + static_cast<size_t>(t) * 97) % buf.pages();
          if (i >= 200 && i < 240) continue;  // racing with the drop
          if (!buf.Matches(mem + i * Ps(), i)) bad++;
        }
      });
    }
    dropper.join();
    for (auto& t : readers) t.join();
    for (size_t i = 200; i < 240; ++i) bad += !testing::AllZero(mem + i * Ps(), Ps());
    EXPECT_EQ(bad.load(), 0u) << "rep " << rep;
    ASSERT_TRUE(r->Finish().ok());
    for (size_t i = 200; i < 240; ++i) bad += !testing::AllZero(mem + i * Ps(), Ps());
    EXPECT_EQ(bad.load(), 0u);
  }
}

TEST(RestoreEvents, ChildThatExecsOrExitsIsDroppedAndTheRestoreCompletes) {
  PatternBuffer buf(256, 80);
  for (int rep = 0; rep < 4; ++rep) {
    RestoreOptions o;
    o.fill.background_fill = false;  // the children's spaces are far from complete
    o.release_when_resident = false;
    auto r = StartOrDie(buf, o);
    ASSERT_NE(r, nullptr);
    char* mem = r->data(0);
    ASSERT_TRUE(buf.Matches(mem + 5 * Ps(), 5));
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (rep % 2 == 0) {
        char* const argv[] = {const_cast<char*>("true"), nullptr};
        execv("/bin/true", argv);
      }
      _exit(0);
    }
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    // The child's space is filled until its mm is found gone (ESRCH); the
    // restore still completes.
    ASSERT_TRUE(r->Finish().ok());
    const RestoreStats st = r->stats();
    EXPECT_EQ(st.forks, 1u);
    EXPECT_EQ(st.spaces_total, 2u);
    EXPECT_EQ(st.spaces_live, 0u);
    size_t bad = 0;
    for (size_t i = 0; i < buf.pages(); ++i) bad += !buf.Matches(mem + i * Ps(), i);
    EXPECT_EQ(bad, 0u);
  }
}

TEST(RestoreEvents, ManyForksWhileFillingAndFaultingNeverHang) {
  // glibc holds its malloc locks across fork(2), and fork(2) waits for the
  // FORK message to be read: the engine's threads must not allocate then
  // (restore/fork_guard.h). Fork often while both engine threads are busy.
  PatternBuffer buf(2048, 90);
  RestoreOptions o;
  o.fill.background_batch_pages = 4;
  o.fill.fault_window_pages = 2;
  o.release_when_resident = false;
  auto r = StartOrDie(buf, o);
  ASSERT_NE(r, nullptr);
  char* mem = r->data(0);
  std::atomic<size_t> bad{0};
  std::thread reader([&] {
    for (size_t i = buf.pages(); i-- > 0;) bad += !buf.Matches(mem + i * Ps(), i);
  });
  for (int k = 0; k < 24; ++k) {
    int pfd[2];
    ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int child_bad = 0;
      for (size_t i = static_cast<size_t>(k); i < buf.pages(); i += 97) {
        child_bad += !buf.Matches(mem + i * Ps(), i);
      }
      ssize_t n = write(pfd[1], &child_bad, sizeof(child_bad));
      _exit(n == sizeof(child_bad) ? 0 : 1);
    }
    close(pfd[1]);
    int child_bad = -1;
    EXPECT_TRUE(ReadIntWithin(pfd[0], &child_bad));
    close(pfd[0]);
    EXPECT_EQ(child_bad, 0) << "fork " << k;
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  }
  reader.join();
  EXPECT_EQ(bad.load(), 0u);
  ASSERT_TRUE(r->Finish().ok());
  EXPECT_EQ(r->stats().forks, 24u);
}

}  // namespace
}  // namespace pagewise
