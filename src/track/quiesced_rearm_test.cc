// QuiescedRearm on the uffd-wp-async tracker: PeekWritten reports without
// re-arming, Rearm re-arms exactly what it is given (both ways: per-range
// write-protect and one whole-range scan), dropped ptes and page-table holes
// included, and an unregistered mapping is refused before anything is
// reported.
#include "track/quiesced_rearm.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "testing/test_util.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

using track_internal::QuiescedRearm;
using RearmWay = QuiescedRearm::RearmWay;

void Poke(char* p, char v) { *reinterpret_cast<volatile char*>(p) = v; }

std::set<size_t> Pages(const std::vector<PageRange>& w, const void* base) {
  std::set<size_t> out;
  const uint64_t b = reinterpret_cast<uint64_t>(base);
  for (const PageRange& r : w) {
    for (uint64_t a = r.start; a < r.end; a += Pg()) out.insert((a - b) / Pg());
  }
  return out;
}

class QuiescedRearmTest : public ::testing::TestWithParam<RearmWay> {
 protected:
  void SetUp() override {
    tracker_ = MakeTracker(TrackBackend::kUffdWpAsync);
    ASSERT_NE(tracker_, nullptr);
    q_ = dynamic_cast<QuiescedRearm*>(tracker_.get());
    ASSERT_NE(q_, nullptr) << "the uffd-wp-async tracker offers QuiescedRearm";
    q_->SetRearmWay(GetParam());
  }
  std::vector<PageRange> Peek() {
    std::vector<PageRange> w;
    Status s = q_->PeekWritten(&w);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return w;
  }
  std::unique_ptr<Tracker> tracker_;
  QuiescedRearm* q_ = nullptr;
};

// Peek leaves pages written: the caller's own writes then take no fault and
// a second peek reports them again; after Rearm only later writes show.
TEST_P(QuiescedRearmTest, PeekDoesNotRearmAndRearmCoversExactlyTheRanges) {
  Mapping m(64 * Pg());
  for (size_t i = 0; i < 64; ++i) Poke(m.page(i), 1);
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  for (size_t i : {3, 4, 5, 20, 63}) Poke(m.page(i), 2);
  std::vector<PageRange> w = Peek();
  EXPECT_EQ(Pages(w, m.data()), (std::set<size_t>{3, 4, 5, 20, 63}));
  EXPECT_EQ(w.size(), 3u) << "sorted and coalesced";
  for (size_t i : {3, 4, 5, 20, 63}) Poke(m.page(i), 3);  // the caller's own writes
  EXPECT_EQ(Pages(Peek(), m.data()), (std::set<size_t>{3, 4, 5, 20, 63}));
  ASSERT_TRUE(q_->Rearm(w).ok());
  EXPECT_TRUE(Peek().empty());
  EXPECT_TRUE(CollectPages(tracker_.get(), m.data(), 64).empty());
  Poke(m.page(4), 4);
  Poke(m.page(30), 4);
  EXPECT_EQ(Pages(Peek(), m.data()), (std::set<size_t>{4, 30}));
  // Collect still reports and re-arms atomically, peeked or not.
  EXPECT_EQ(CollectPages(tracker_.get(), m.data(), 64), (std::set<size_t>{4, 30}));
  EXPECT_TRUE(Peek().empty());
}

// Pages emptied by MADV_DONTNEED (the rewind's way to put back zero pages)
// are re-armed too, also when the zap freed whole page tables.
TEST_P(QuiescedRearmTest, DroppedPagesAndPageTableHolesAreRearmed) {
  Mapping m(8 << 20, MemKind::kThp);  // 2 MiB aligned: whole page tables
  ASSERT_EQ(madvise(m.data(), m.size(), MADV_NOHUGEPAGE), 0);
  const size_t n = m.size() / Pg();
  for (size_t i = 0; i < n; ++i) Poke(m.page(i), 1);
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  const size_t hole = (2 << 20) / Pg(), hole_pages = (4 << 20) / Pg();
  for (size_t i = hole; i < hole + hole_pages; ++i) Poke(m.page(i), 2);
  Poke(m.page(7), 2);
  std::vector<PageRange> w = Peek();
  EXPECT_EQ(Pages(w, m.data()).size(), hole_pages + 1);
  // What a rewind does for pages that were zero: drop them (through Env,
  // as the rewind does: libc's madvise would also be reported as a drop by
  // the interposer), then re-arm.
  Env* env = Env::Default();
  ASSERT_TRUE(env->Madvise(m.page(hole), hole_pages * Pg(), MADV_DONTNEED).ok());
  ASSERT_TRUE(env->Madvise(m.page(7), Pg(), MADV_DONTNEED).ok());
  ASSERT_TRUE(q_->Rearm(w).ok());
  EXPECT_TRUE(Peek().empty());
  Poke(m.page(hole + 100), 3);  // inside the freed page tables
  Poke(m.page(7), 3);
  EXPECT_EQ(Pages(Peek(), m.data()), (std::set<size_t>{7, hole + 100}));
}

// Without WP_MATCHING the kernel would report an unregistered mapping as
// all written; PeekWritten refuses the range before reporting any of it.
TEST_P(QuiescedRearmTest, UnregisteredMappingIsRefusedBeforeScanning) {
  Mapping m(16 * Pg());
  ASSERT_TRUE(tracker_->Track(m.data(), m.size()).ok());
  Poke(m.page(1), 1);
  void* again = mmap(m.page(8), 8 * Pg(), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(again, m.page(8));
  ASSERT_EQ(madvise(again, 8 * Pg(), MADV_NOHUGEPAGE), 0);  // a separate VMA
  Poke(m.page(10), 1);
  std::vector<PageRange> w;
  Status s = q_->PeekWritten(&w);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(w.empty());
  ASSERT_TRUE(tracker_->Untrack(m.data(), m.size()).ok());
}

INSTANTIATE_TEST_SUITE_P(Ways, QuiescedRearmTest,
                         ::testing::Values(RearmWay::kCheapest, RearmWay::kPerRange,
                                           RearmWay::kWholeScan),
                         [](const auto& info) {
                           switch (info.param) {
                             case RearmWay::kPerRange:
                               return std::string("PerRange");
                             case RearmWay::kWholeScan:
                               return std::string("WholeScan");
                             default:
                               return std::string("Cheapest");
                           }
                         });

// The other backends do not offer the two-step path (their callers keep
// using Collect()).
TEST(QuiescedRearm, OnlyTheAsyncBackendOffersIt) {
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kMprotect);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(dynamic_cast<QuiescedRearm*>(t.get()), nullptr);
}

}  // namespace
}  // namespace pagewise::testing
