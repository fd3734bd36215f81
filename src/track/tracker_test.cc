// Tracker contract tests, run against every backend this kernel offers.
#include "pagewise/tracker.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "testing/test_util.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

void Poke(char* p, char v) { *static_cast<volatile char*>(p) = v; }
char Peek(const char* p) { return *static_cast<const volatile char*>(p); }

class TrackerTest : public ::testing::TestWithParam<TrackBackend> {
 protected:
  void SetUp() override {
    tracker_ = MakeTracker(GetParam());
    ASSERT_NE(tracker_, nullptr);
  }
  std::unique_ptr<Tracker> tracker_;
};

TEST_P(TrackerTest, ReportsExactlyTheWrittenPagesCoalesced) {
  Mapping m(64 * Pg());
  for (size_t i = 0; i < 64; ++i) Poke(m.page(i), 1);  // pre-Track writes are not reported
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 64).empty());

  const std::set<size_t> s = {1, 2, 3, 10, 20, 21, 22, 23, 24, 25, 63};
  for (size_t i : s) Poke(m.page(i) + 100, 7);
  std::vector<PageRange> w;
  ASSERT_TRUE(tracker_->Collect(&w).ok());
  const std::vector<PageRange> expect = {{m.addr() + 1 * Pg(), m.addr() + 4 * Pg()},
                                         {m.addr() + 10 * Pg(), m.addr() + 11 * Pg()},
                                         {m.addr() + 20 * Pg(), m.addr() + 26 * Pg()},
                                         {m.addr() + 63 * Pg(), m.addr() + 64 * Pg()}};
  EXPECT_EQ(w, expect);
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 64).empty()) << "second collect not empty";

  // Reads do not count as writes; a re-written page is reported again.
  for (size_t i = 0; i < 64; ++i) (void)Peek(m.page(i));
  Poke(m.page(2), 9);
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 64), (std::set<size_t>{2}));
  TrackerStats st = tracker_->stats();
  EXPECT_EQ(st.collects, 4u);
  EXPECT_EQ(st.pages_reported, 12u);
}

TEST_P(TrackerTest, NeverTouchedPagesAreTrackedToo) {
  Mapping m(32 * Pg());  // never touched before Track
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 32).empty());
  Poke(m.page(0), 1);
  Poke(m.page(31), 1);
  (void)Peek(m.page(5));
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 32), (std::set<size_t>{0, 31}));
}

TEST_P(TrackerTest, AppendsToExistingVectorAndKeepsRangesApart) {
  Mapping a(8 * Pg()), b(8 * Pg());
  ASSERT_TRUE(tracker_->Track(a.data(), a.size()).ok());
  ASSERT_TRUE(tracker_->Track(b.data(), b.size()).ok());
  std::vector<PageRange> tracked = tracker_->tracked();
  ASSERT_EQ(tracked.size(), 2u);
  EXPECT_LT(tracked[0].start, tracked[1].start);
  Poke(a.page(7), 1);
  Poke(b.page(0), 1);
  std::vector<PageRange> w = {{1, 2}};  // existing content stays first
  ASSERT_TRUE(tracker_->Collect(&w).ok());
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0], (PageRange{1, 2}));
  std::vector<PageRange> got(w.begin() + 1, w.end());
  std::vector<PageRange> want = {{a.addr() + 7 * Pg(), a.addr() + 8 * Pg()},
                                 {b.addr(), b.addr() + Pg()}};
  if (want[1].start < want[0].start) std::swap(want[0], want[1]);
  if (want[0].end == want[1].start) want = {{want[0].start, want[1].end}};
  EXPECT_EQ(got.size(), want.size());
  if (got.size() == want.size()) {
    EXPECT_EQ(got, want);
  }
}

TEST_P(TrackerTest, UntrackStopsReportingAndAllowsRetrack) {
  Mapping m(16 * Pg());
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  Poke(m.page(3), 1);
  ASSERT_TRUE(tracker_->Untrack(m.data(), m.size()).ok());
  EXPECT_TRUE(tracker_->tracked().empty());
  Poke(m.page(4), 1);  // writable after Untrack
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 16).empty());
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 16).empty());
  Poke(m.page(5), 1);
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 16), (std::set<size_t>{5}));
}

TEST_P(TrackerTest, RejectsBadInput) {
  Mapping m(16 * Pg());
  Status s = tracker_->Track(m.data() + 1, Pg());
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("page aligned"), std::string::npos) << s.message();
  s = tracker_->Track(m.data(), Pg() + 5);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  s = tracker_->Track(m.data(), 0);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  s = tracker_->Track(nullptr, Pg());
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();

  // Unmapped memory: a hole punched in the middle of a mapping. (Unmapped
  // piece by piece afterwards: something else may be mapped in the hole.)
  char* hole = static_cast<char*>(
      mmap(nullptr, 8 * Pg(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(hole, MAP_FAILED);
  ASSERT_EQ(munmap(hole + 4 * Pg(), Pg()), 0);
  s = tracker_->Track(hole, 8 * Pg());
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("not mapped"), std::string::npos) << s.message();
  EXPECT_TRUE(tracker_->tracked().empty());
  ASSERT_EQ(munmap(hole, 4 * Pg()), 0);
  ASSERT_EQ(munmap(hole + 5 * Pg(), 3 * Pg()), 0);

  ASSERT_TRUE(tracker_->Track(m.page(4), 4 * Pg()).ok());
  s = tracker_->Track(m.page(6), 4 * Pg());
  EXPECT_EQ(s.code(), Code::kAlreadyExists) << s.ToString();
  s = tracker_->Track(m.page(0), 5 * Pg());
  EXPECT_EQ(s.code(), Code::kAlreadyExists) << s.ToString();
  s = tracker_->Track(m.page(4), 4 * Pg());
  EXPECT_EQ(s.code(), Code::kAlreadyExists) << s.ToString();
  EXPECT_TRUE(tracker_->Track(m.page(0), 4 * Pg()).ok());  // adjacent is fine
  EXPECT_TRUE(tracker_->Track(m.page(8), 8 * Pg()).ok());
  EXPECT_EQ(tracker_->tracked().size(), 3u);

  s = tracker_->Untrack(m.page(4), 2 * Pg());  // not exactly a tracked range
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  s = tracker_->Untrack(m.page(4) + 1, 4 * Pg());
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_EQ(tracker_->tracked().size(), 3u);
}

TEST_P(TrackerTest, DontneedReportsDroppedPagesWrittenOrNot) {
  Mapping m(32 * Pg());
  for (size_t i = 0; i < 32; ++i) Poke(m.page(i), 5);
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  Poke(m.page(1), 6);  // written since the last collect, then dropped
  ASSERT_EQ(madvise(m.page(1), 2 * Pg(), MADV_DONTNEED), 0);  // page 2: clean, dropped
  ASSERT_EQ(madvise(m.page(10), Pg(), MADV_DONTNEED), 0);
  std::set<size_t> got = CollectPages(tracker_.get(), m.data(), 32);
  EXPECT_EQ(got, (std::set<size_t>{1, 2, 10}));
  EXPECT_EQ(Peek(m.page(2)), 0);
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 32).empty());
  // Dropped pages stay tracked: a later write is reported.
  Poke(m.page(2), 1);
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 32), (std::set<size_t>{2}));
}

TEST_P(TrackerTest, DontneedOfWholePageTablesIsReported) {
  // 2 MiB aligned so the zap can free whole page tables.
  Mapping m(8 << 20, MemKind::kThp);
  ASSERT_EQ(madvise(m.data(), m.size(), MADV_NOHUGEPAGE), 0);
  const size_t n = m.size() / Pg();
  for (size_t i = 0; i < n; i += 1) Poke(m.page(i), 3);
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  ASSERT_EQ(madvise(m.data() + (2 << 20), 4 << 20, MADV_DONTNEED), 0);
  std::set<size_t> got = CollectPages(tracker_.get(), m.data(), n);
  EXPECT_EQ(got.size(), (4u << 20) / Pg());
  EXPECT_EQ(*got.begin(), (2u << 20) / Pg());
  EXPECT_EQ(*got.rbegin(), (6u << 20) / Pg() - 1);
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), n).empty());
  Poke(m.page(n / 2), 1);  // inside the dropped part: tracked again
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), n), (std::set<size_t>{n / 2}));
}

TEST_P(TrackerTest, MunmapThenUntrackSucceeds) {
  Mapping m(16 * Pg());
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  Poke(m.page(0), 1);
  Poke(m.page(12), 1);
  char* base = m.data();
  m.Release();                                      // unmapped piece by piece below
  ASSERT_EQ(munmap(base + 8 * Pg(), 8 * Pg()), 0);  // half of it goes away
  std::set<size_t> got = CollectPages(tracker_.get(), base, 16);
  EXPECT_TRUE(got.count(0));
  EXPECT_FALSE(got.count(12));
  ASSERT_EQ(munmap(base, 8 * Pg()), 0);
  EXPECT_TRUE(CollectPages(tracker_.get(), base, 16).empty());
  Status s = tracker_->Untrack(base, 16 * Pg());
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(tracker_->tracked().empty());
}

TEST_P(TrackerTest, MremapIsNotFollowedButRetrackWorks) {
  Mapping dst(16 * Pg());  // reserves a destination
  void* old_addr =
      mmap(nullptr, 16 * Pg(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(old_addr, MAP_FAILED);
  char* old_p = static_cast<char*>(old_addr);
  for (size_t i = 0; i < 16; ++i) Poke(old_p + i * Pg(), 1);
  ASSERT_TRUE(tracker_->Track(old_p, 16 * Pg()).ok());
  Poke(old_p + 3 * Pg(), 2);
  void* moved = mremap(old_p, 16 * Pg(), 16 * Pg(), MREMAP_MAYMOVE | MREMAP_FIXED, dst.data());
  ASSERT_EQ(moved, dst.data());
  EXPECT_EQ(Peek(dst.page(3)), 2);
  Poke(dst.page(4), 3);  // not tracked: the tracker does not follow moves
  // (Collect before Untrack is not checked here: a sanitizer runtime may map
  // its own memory at the vacated address; see MemoryMappedAgainAtTrackedAddress.)
  Status s = tracker_->Untrack(old_p, 16 * Pg());
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(tracker_->tracked().empty());
  ASSERT_TRUE(tracker_->Track(dst.data(), dst.size()).ok());
  EXPECT_TRUE(CollectPages(tracker_.get(), dst.data(), 16).empty());
  Poke(dst.page(5), 4);
  EXPECT_EQ(CollectPages(tracker_.get(), dst.data(), 16), (std::set<size_t>{5}));
}

TEST_P(TrackerTest, ProgramMprotectDoesNotLoseOrInventWrites) {
  Mapping m(16 * Pg());
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  Poke(m.page(1), 1);
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 16), (std::set<size_t>{1}));
  Poke(m.page(2), 1);  // written, then the program toggles protection
  ASSERT_EQ(mprotect(m.data(), m.size(), PROT_READ), 0);
  EXPECT_EQ(Peek(m.page(2)), 1);
  ASSERT_EQ(mprotect(m.data(), m.size(), PROT_READ | PROT_WRITE), 0);
  Poke(m.page(7), 1);
  ASSERT_EQ(mprotect(m.page(8), 4 * Pg(), PROT_READ | PROT_WRITE), 0);  // RW -> RW
  Poke(m.page(9), 1);
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 16), (std::set<size_t>{2, 7, 9}));
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 16).empty());
  Poke(m.page(15), 1);
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 16), (std::set<size_t>{15}));
}

TEST_P(TrackerTest, TransparentHugePagesNeverMissAWrite) {
  constexpr size_t kLen = 8 << 20;
  Mapping m(kLen, MemKind::kThp);
  const size_t n = kLen / Pg(), per_huge = (2 << 20) / Pg();
  for (size_t i = 0; i < n; ++i) Poke(m.page(i), 1);  // let THPs form
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), n).empty());
  std::mt19937 rng(42);
  for (int round = 0; round < 4; ++round) {
    std::set<size_t> wrote;
    for (int k = 0; k < 20; ++k) {
      size_t i = rng() % n;
      Poke(m.page(i) + 17, static_cast<char>(round + 2));
      wrote.insert(i);
    }
    std::set<size_t> got = CollectPages(tracker_.get(), m.data(), n);
    for (size_t i : wrote) EXPECT_TRUE(got.count(i)) << "lost write to page " << i;
    // Over-reporting is bounded by the huge pages that were written.
    for (size_t i : got) {
      bool near = false;
      for (size_t w : wrote) near |= (w / per_huge == i / per_huge);
      EXPECT_TRUE(near) << "page " << i << " reported but its huge page was not written";
    }
  }
}

TEST_P(TrackerTest, MemfdSharedMemory) {
  Mapping m(32 * Pg(), MemKind::kMemfdShared);
  for (size_t i = 0; i < 32; ++i) Poke(m.page(i), 4);
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 32).empty());
  Poke(m.page(3), 1);
  Poke(m.page(30), 1);
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 32), (std::set<size_t>{3, 30}));
  // A write through another mapping of the same file is not a write to this
  // range's ptes; it is not reported (documented), but it must not break
  // tracking of this mapping.
  // MADV_REMOVE punches pages out of the file: their content is now zero.
  ASSERT_EQ(madvise(m.page(5), 2 * Pg(), MADV_REMOVE), 0);
  EXPECT_EQ(Peek(m.page(5)), 0);
  std::set<size_t> got = CollectPages(tracker_.get(), m.data(), 32);
  EXPECT_TRUE(got.count(5) && got.count(6)) << "MADV_REMOVE'd pages not reported";
  // MADV_DONTNEED on shared memory keeps the content; it may be reported.
  ASSERT_EQ(madvise(m.page(8), Pg(), MADV_DONTNEED), 0);
  EXPECT_EQ(Peek(m.page(8)), 4);
  (void)CollectPages(tracker_.get(), m.data(), 32);
  Poke(m.page(8), 2);
  Poke(m.page(6), 2);
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 32), (std::set<size_t>{6, 8}));
}

// A mini `pagewise check`: writers stamp random words of random pages while a
// collector copies every reported page into a replica. After the writers
// stop, one final collect + copy must make the replica equal the source.
TEST_P(TrackerTest, ConcurrentWritersReplicaConverges) {
  constexpr size_t kLen = 64 << 20;
  Mapping src(kLen);
  const size_t n = kLen / Pg();
  std::vector<uint64_t> replica(kLen / 8, 0);
  ASSERT_TRUE(tracker_->Track(src.data(), src.size()).ok());

  std::atomic<bool> stop{false};
  auto writer = [&](uint64_t id) {
    std::mt19937_64 rng(id);
    uint64_t* words = reinterpret_cast<uint64_t*>(src.data());
    for (uint64_t stamp = 1; !stop.load(std::memory_order_relaxed); ++stamp) {
      size_t w = rng() % (kLen / 8);
      __atomic_store_n(&words[w], (id << 48) | stamp, __ATOMIC_RELAXED);
    }
  };
  auto copy_pages = [&](const std::vector<PageRange>& ranges) {
    const uint64_t* words = reinterpret_cast<const uint64_t*>(src.data());
    for (const PageRange& r : ranges) {
      for (uint64_t a = r.start; a < r.end; a += 8) {
        size_t w = (a - src.addr()) / 8;
        replica[w] = __atomic_load_n(&words[w], __ATOMIC_RELAXED);
      }
    }
  };
  std::thread w1(writer, 1), w2(writer, 2);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(800);
  size_t collects = 0, reported = 0;
  while (std::chrono::steady_clock::now() < deadline || collects < 3) {
    std::vector<PageRange> ranges;
    Status s = tracker_->Collect(&ranges);
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (const PageRange& r : ranges) reported += r.pages(Pg());
    copy_pages(ranges);
    collects++;
  }
  stop = true;
  w1.join();
  w2.join();
  std::vector<PageRange> ranges;
  ASSERT_TRUE(tracker_->Collect(&ranges).ok());
  copy_pages(ranges);
  size_t bad_pages = 0;
  for (size_t p = 0; p < n; ++p) {
    if (std::memcmp(src.page(p), &replica[p * Pg() / 8], Pg()) != 0) bad_pages++;
  }
  EXPECT_EQ(bad_pages, 0u) << "lost writes on " << bad_pages << " pages after " << collects
                           << " collects (" << reported << " pages reported)";
  EXPECT_GT(collects, 2u);
  EXPECT_GT(reported, 0u);
}

// uffd-wp-async: memory unmapped and mapped again at a tracked address is
// not registered; Collect says so instead of silently missing its writes,
// after collecting the parts that are still registered.
TEST(UffdWpAsyncEvents, MemoryMappedAgainAtTrackedAddress) {
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWpAsync);
  Mapping m(16 * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  Poke(m.page(1), 1);
  // MAP_FIXED replaces the registered mapping in one step.
  void* again = mmap(m.page(8), 8 * Pg(), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(again, m.page(8));
  ASSERT_EQ(madvise(again, 8 * Pg(), MADV_NOHUGEPAGE), 0);  // keep it a separate VMA
  Poke(m.page(10), 1);
  std::vector<PageRange> w;
  Status s = t->Collect(&w);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("Untrack"), std::string::npos) << s.message();
  EXPECT_EQ(w, (std::vector<PageRange>{{m.addr() + Pg(), m.addr() + 2 * Pg()}}));
  EXPECT_TRUE(t->Untrack(m.data(), m.size()).ok());
  EXPECT_TRUE(t->Collect(&w).ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, TrackerTest,
                         ::testing::Values(TrackBackend::kUffdWpAsync, TrackBackend::kUffdWp,
                                           TrackBackend::kMprotect),
                         BackendParamName);

}  // namespace
}  // namespace pagewise::testing
