// uffd-wp (sync) backend specifics: the fault hook, the fallbacks for
// kernels without WP_UNPOPULATED or PAGEMAP_SCAN, and its own-memory guard.
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "pagewise/probe.h"
#include "testing/test_util.h"
#include "track/track_test_util.h"
#include "track/uffd_wp_tracker.h"

namespace pagewise::testing {
namespace {

// Writes and reads use relaxed atomics: the hook reads a page on the tracker
// thread while the writer is parked in the kernel, an ordering TSan cannot see.
void Store(char* p, uint64_t v) {
  __atomic_store_n(reinterpret_cast<uint64_t*>(p), v, __ATOMIC_RELAXED);
}
uint64_t Load(const char* p) {
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(p), __ATOMIC_RELAXED);
}

std::unique_ptr<UffdWpTracker> MakeSync() {
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWp);
  UffdWpTracker* s = dynamic_cast<UffdWpTracker*>(t.get());
  EXPECT_NE(s, nullptr);
  if (s == nullptr) return nullptr;
  (void)t.release();
  return std::unique_ptr<UffdWpTracker>(s);
}

TEST(UffdWpHook, SeesThePageBeforeItsFirstWriteSinceCollect) {
  std::unique_ptr<UffdWpTracker> t = MakeSync();
  ASSERT_NE(t, nullptr);
  Mapping m(8 * Pg());
  for (size_t i = 0; i < 8; ++i) Store(m.page(i), 100 + i);
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  std::mutex mu;
  std::map<uint64_t, std::vector<uint64_t>> seen;  // page -> (first word, calls)
  t->SetFaultHook([&](uint64_t page) {
    std::lock_guard<std::mutex> lock(mu);
    seen[page].push_back(Load(reinterpret_cast<const char*>(page)));
  });
  Store(m.page(1) + 8, 7);  // the hook sees word 0 unchanged
  Store(m.page(1), 201);    // no second fault: the page is writable now
  Store(m.page(5), 205);
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[m.addr() + Pg()], (std::vector<uint64_t>{101}));
    EXPECT_EQ(seen[m.addr() + 5 * Pg()], (std::vector<uint64_t>{105}));
  }
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{1, 5}));
  Store(m.page(1), 301);  // re-armed by the collect: the hook sees 201
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(seen[m.addr() + Pg()], (std::vector<uint64_t>{101, 201}));
  }
  EXPECT_EQ(t->stats().faults_handled, 3u);
  t->SetFaultHook(nullptr);
  Store(m.page(6), 1);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(seen.count(m.addr() + 6 * Pg()), 0u);
  }
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{1, 6}));
}

TEST(UffdWpHook, ConcurrentWritersEachPageHookedOncePerCollect) {
  std::unique_ptr<UffdWpTracker> t = MakeSync();
  ASSERT_NE(t, nullptr);
  constexpr size_t kPages = 256;
  Mapping m(kPages * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  std::vector<std::atomic<int>> calls(kPages);
  t->SetFaultHook([&](uint64_t page) { calls[(page - m.addr()) / Pg()].fetch_add(1); });
  auto writer = [&](uint64_t id) {
    for (size_t i = 0; i < kPages; ++i) Store(m.page(i) + 8 * id, id);
  };
  std::thread a(writer, 1), b(writer, 2);
  a.join();
  b.join();
  // Both threads may fault on a page before either is served, so a page can
  // be hooked twice; never zero times, and never more than once per writer.
  for (size_t i = 0; i < kPages; ++i) {
    EXPECT_GE(calls[i].load(), 1) << i;
    EXPECT_LE(calls[i].load(), 2) << i;
  }
  EXPECT_EQ(CollectPages(t.get(), m.data(), kPages).size(), kPages);
}

TEST(UffdWpGuard, RefusesToTrackItsOwnThreadStack) {
  std::unique_ptr<UffdWpTracker> t = MakeSync();
  ASSERT_NE(t, nullptr);
  Mapping m(Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  std::atomic<uint64_t> stack_addr{0};
  t->SetFaultHook([&](uint64_t) {
    volatile char local = 0;
    stack_addr = reinterpret_cast<uint64_t>(&local);
  });
  Store(m.data(), 1);
  ASSERT_NE(stack_addr.load(), 0u);
  t->SetFaultHook(nullptr);
  void* page = reinterpret_cast<void*>(stack_addr.load() & ~(Pg() - 1));
  Status s = t->Track(page, Pg());
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("own memory"), std::string::npos) << s.message();
}

// The fallbacks a kernel without WP_UNPOPULATED (pre-fault by reading) or
// without PAGEMAP_SCAN (sweep /proc/self/pagemap) takes.
struct Knobs {
  bool unpopulated;
  bool scan;
};

class UffdWpFallbackTest : public ::testing::TestWithParam<Knobs> {
 protected:
  void SetUp() override {
    track_internal::UffdWpOptions o;
    o.use_wp_unpopulated = GetParam().unpopulated;
    o.use_pagemap_scan = GetParam().scan;
    Result<std::unique_ptr<UffdWpTracker>> t =
        track_internal::NewUffdWpTracker(Env::Default(), Features(), o);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    t_ = std::move(t).value();
  }
  std::unique_ptr<UffdWpTracker> t_;
};

TEST_P(UffdWpFallbackTest, ExactReportsIncludingNeverTouchedPages) {
  Mapping m(64 * Pg());
  for (size_t i = 0; i < 32; ++i) Store(m.page(i), 1);  // half populated
  ASSERT_TRUE(t_->Track(m.data(), m.size()).ok());
  EXPECT_TRUE(CollectPages(t_.get(), m.data(), 64).empty());
  Store(m.page(3), 2);
  Store(m.page(50), 2);
  EXPECT_EQ(CollectPages(t_.get(), m.data(), 64), (std::set<size_t>{3, 50}));
  EXPECT_TRUE(CollectPages(t_.get(), m.data(), 64).empty());
}

TEST_P(UffdWpFallbackTest, DontneedThenWriteIsNotLost) {
  Mapping m(32 * Pg());
  for (size_t i = 0; i < 32; ++i) Store(m.page(i), 1);
  ASSERT_TRUE(t_->Track(m.data(), m.size()).ok());
  ASSERT_EQ(madvise(m.page(4), 4 * Pg(), MADV_DONTNEED), 0);
  Store(m.page(5), 9);  // no write-protect fault: the marker went with the pte
  std::set<size_t> got = CollectPages(t_.get(), m.data(), 32);
  EXPECT_EQ(got, (std::set<size_t>{4, 5, 6, 7}));
  EXPECT_TRUE(CollectPages(t_.get(), m.data(), 32).empty());
  Store(m.page(6), 9);  // protected again by the collect
  EXPECT_EQ(CollectPages(t_.get(), m.data(), 32), (std::set<size_t>{6}));
  EXPECT_GE(t_->stats().faults_handled, 1u);
}

TEST_P(UffdWpFallbackTest, UnmappedPagesAreNotReported) {
  Mapping m(16 * Pg());
  ASSERT_TRUE(t_->Track(m.data(), m.size()).ok());
  Store(m.page(2), 1);
  Store(m.page(12), 1);
  char* base = m.data();
  m.Release();  // unmapped piece by piece
  ASSERT_EQ(munmap(base + 8 * Pg(), 8 * Pg()), 0);
  EXPECT_EQ(CollectPages(t_.get(), base, 16), (std::set<size_t>{2}));
  EXPECT_TRUE(t_->Untrack(base, 16 * Pg()).ok());
  ASSERT_EQ(munmap(base, 8 * Pg()), 0);
}

TEST_P(UffdWpFallbackTest, ConcurrentWritersReplicaConverges) {
  constexpr size_t kLen = 8 << 20;
  Mapping src(kLen);
  std::vector<uint64_t> replica(kLen / 8, 0);
  ASSERT_TRUE(t_->Track(src.data(), src.size()).ok());
  std::atomic<bool> stop{false};
  auto writer = [&](uint64_t id) {
    std::mt19937_64 rng(id);
    for (uint64_t stamp = 1; !stop.load(std::memory_order_relaxed); ++stamp) {
      size_t w = rng() % (kLen / 8);
      Store(src.data() + w * 8, (id << 48) | stamp);
      if (stamp % 4096 == 0)
        madvise(src.data() + (rng() % (kLen / Pg())) * Pg(), Pg(), MADV_DONTNEED);
    }
  };
  auto copy = [&](const std::vector<PageRange>& ranges) {
    for (const PageRange& r : ranges) {
      for (uint64_t a = r.start; a < r.end; a += 8) {
        replica[(a - src.addr()) / 8] = Load(reinterpret_cast<const char*>(a));
      }
    }
  };
  std::thread w1(writer, 1), w2(writer, 2);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  int collects = 0;
  while (std::chrono::steady_clock::now() < deadline || collects < 3) {
    std::vector<PageRange> ranges;
    ASSERT_TRUE(t_->Collect(&ranges).ok());
    copy(ranges);
    collects++;
  }
  stop = true;
  w1.join();
  w2.join();
  std::vector<PageRange> ranges;
  ASSERT_TRUE(t_->Collect(&ranges).ok());
  copy(ranges);
  size_t bad = 0;
  for (size_t w = 0; w < kLen / 8; ++w) bad += replica[w] != Load(src.data() + w * 8);
  EXPECT_EQ(bad, 0u) << "lost writes (words differing) after " << collects << " collects";
}

INSTANTIATE_TEST_SUITE_P(Knobs, UffdWpFallbackTest,
                         ::testing::Values(Knobs{true, true}, Knobs{false, true},
                                           Knobs{true, false}, Knobs{false, false}),
                         [](const ::testing::TestParamInfo<Knobs>& info) {
                           return std::string(info.param.unpopulated ? "unpopulated" : "prefault") +
                                  (info.param.scan ? "_scan" : "_pagemap");
                         });

}  // namespace
}  // namespace pagewise::testing
