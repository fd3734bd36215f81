// Tracker contract on hugetlbfs (2 MiB and 1 GiB, private and shared) and
// on private shmem mappings, for every backend: with uffd-wp-async, writes
// are reported as whole huge pages, re-armed by the collect, and dropped
// huge pages are reported; the other backends refuse hugetlbfs naming
// uffd-wp-async; ranges that are not huge-page aligned are refused with an
// error naming the huge page size, leaving nothing tracked.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "pagewise/tracker.h"
#include "testing/hugepages.h"
#include "testing/test_util.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

constexpr size_t kHuge = 2 << 20;

void Poke(char* p, char v) { *static_cast<volatile char*>(p) = v; }
char Peek(const char* p) { return *static_cast<const volatile char*>(p); }

// Huge pages (indices relative to base) that a collect reports; fails the
// test if a report does not cover whole huge pages.
std::set<size_t> CollectHuge(Tracker* t, const char* base, size_t huge) {
  std::vector<PageRange> w;
  Status s = t->Collect(&w);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::set<size_t> out;
  const uint64_t b = reinterpret_cast<uint64_t>(base);
  for (const PageRange& r : w) {
    EXPECT_EQ((r.start - b) % huge, 0u) << "report not huge-page aligned";
    EXPECT_EQ((r.end - b) % huge, 0u) << "report not whole huge pages";
    for (uint64_t a = r.start; a < r.end; a += huge) out.insert((a - b) / huge);
  }
  return out;
}

// A hugetlbfs mapping: private anonymous (MAP_HUGETLB) or a shared memfd
// (MFD_HUGETLB). Unmapped on destruction.
struct HugeMapping {
  HugeMapping(size_t huge, size_t count, bool shared) : len(huge * count) {
    const int size_flag = (huge == (1u << 30) ? 30 : 21) << MAP_HUGE_SHIFT;
    if (shared) {
      memfd = memfd_create("pagewise-huge", MFD_CLOEXEC | MFD_HUGETLB |
                                                (huge == (1u << 30) ? MFD_HUGE_1GB : MFD_HUGE_2MB));
      if (memfd < 0 || ftruncate(memfd, static_cast<off_t>(len)) != 0) return;
      void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
      data = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    } else {
      void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | size_flag, -1, 0);
      data = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    }
  }
  ~HugeMapping() {
    if (data != nullptr) munmap(data, len);
    if (memfd >= 0) close(memfd);
  }
  char* data = nullptr;
  size_t len;
  int memfd = -1;
};

class TrackerKindsTest : public ::testing::TestWithParam<TrackBackend> {
 protected:
  void SetUp() override {
    tracker_ = MakeTracker(GetParam());
    ASSERT_NE(tracker_, nullptr);
  }
  // Only uffd-wp-async tracks hugetlbfs; the others refuse it by name.
  bool TracksHugetlbfs() const { return GetParam() == TrackBackend::kUffdWpAsync; }
  // Track(m) where hugetlbfs is supported; otherwise checks the refusal
  // and returns false.
  bool TrackHuge(HugeMapping& m) {
    Status s = tracker_->Track(m.data, m.len);
    if (TracksHugetlbfs()) {
      EXPECT_TRUE(s.ok()) << s.ToString();
      return s.ok();
    }
    EXPECT_EQ(s.code(), Code::kNotSupported) << s.ToString();
    EXPECT_NE(s.message().find("uffd-wp-async"), std::string::npos) << s.ToString();
    EXPECT_TRUE(tracker_->tracked().empty());
    return false;
  }
  // Writes, collects and re-arms on `m` (huge pages of `huge` bytes).
  void ExerciseHuge(HugeMapping& m, size_t huge) {
    const size_t n = m.len / huge;
    for (size_t i = 0; i < n; ++i) Poke(m.data + i * huge + 100, 1);  // populated first
    if (!TrackHuge(m)) return;
    EXPECT_TRUE(CollectHuge(tracker_.get(), m.data, huge).empty());
    // Writes far inside a huge page report that whole huge page.
    Poke(m.data + 1 * huge + huge - 1, 2);
    Poke(m.data + (n - 1) * huge + 5 * 4096, 2);
    std::set<size_t> want = {1, n - 1};
    EXPECT_EQ(CollectHuge(tracker_.get(), m.data, huge), want);
    EXPECT_TRUE(CollectHuge(tracker_.get(), m.data, huge).empty()) << "collect must re-arm";
    Poke(m.data + 1 * huge + 12345, 3);
    EXPECT_EQ(CollectHuge(tracker_.get(), m.data, huge), (std::set<size_t>{1}));
    EXPECT_EQ(Peek(m.data + 1 * huge + huge - 1), 2);
    EXPECT_EQ(Peek(m.data + 1 * huge + 12345), 3);
    ASSERT_TRUE(tracker_->Untrack(m.data, m.len).ok());
  }
  std::unique_ptr<Tracker> tracker_;
};

TEST_P(TrackerKindsTest, Hugetlbfs2MiBPrivate) {
  HugePagePool pool(kHuge, 4);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  HugeMapping m(kHuge, 4, /*shared=*/false);
  ASSERT_NE(m.data, nullptr) << strerror(errno);
  ExerciseHuge(m, kHuge);
}

TEST_P(TrackerKindsTest, Hugetlbfs2MiBSharedMemfd) {
  HugePagePool pool(kHuge, 4);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  HugeMapping m(kHuge, 4, /*shared=*/true);
  ASSERT_NE(m.data, nullptr) << strerror(errno);
  ExerciseHuge(m, kHuge);
}

TEST_P(TrackerKindsTest, Hugetlbfs1GiBWhereThePoolAllows) {
  constexpr size_t kGiB = 1u << 30;
  HugePagePool pool(kGiB, 1);
  // A 1 GiB page needs 1 GiB of contiguous free memory: on a machine that
  // cannot find it the pool stays empty, which the test asserts is
  // reported clearly, then stops.
  if (!pool.ok()) {
    EXPECT_NE(pool.reason().find("1048576 KiB"), std::string::npos) << pool.reason();
    std::fprintf(stderr, "no 1 GiB huge page here; checked the pool's reason: %s\n",
                 pool.reason().c_str());
    return;
  }
  HugeMapping m(kGiB, 1, /*shared=*/false);
  ASSERT_NE(m.data, nullptr) << strerror(errno);
  Poke(m.data, 1);
  if (!TrackHuge(m)) return;
  EXPECT_TRUE(CollectHuge(tracker_.get(), m.data, kGiB).empty());
  Poke(m.data + kGiB - 1, 2);
  EXPECT_EQ(CollectHuge(tracker_.get(), m.data, kGiB), (std::set<size_t>{0}));
  EXPECT_TRUE(CollectHuge(tracker_.get(), m.data, kGiB).empty());
  ASSERT_TRUE(tracker_->Untrack(m.data, m.len).ok());
}

TEST_P(TrackerKindsTest, HugetlbfsRangeNotHugeAlignedIsRefusedByName) {
  HugePagePool pool(kHuge, 2);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  HugeMapping m(kHuge, 2, /*shared=*/false);
  ASSERT_NE(m.data, nullptr);
  Poke(m.data, 1);
  for (auto [off, len] : {std::pair<size_t, size_t>{4096, kHuge}, {0, kHuge + 4096}}) {
    Status s = tracker_->Track(m.data + off, len);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("huge page"), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find("2097152"), std::string::npos) << s.ToString();
  }
  EXPECT_TRUE(tracker_->tracked().empty()) << "nothing is left tracked";
  // The aligned range works afterwards (nothing stayed registered).
  TrackHuge(m);
}

TEST_P(TrackerKindsTest, DroppedHugePagesAreReported) {
  HugePagePool pool(kHuge, 4);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  HugeMapping m(kHuge, 4, /*shared=*/false);
  ASSERT_NE(m.data, nullptr);
  for (size_t i = 0; i < 4; ++i) Poke(m.data + i * kHuge, 7);
  if (!TrackHuge(m)) return;
  EXPECT_TRUE(CollectHuge(tracker_.get(), m.data, kHuge).empty());
  ASSERT_EQ(madvise(m.data + 2 * kHuge, kHuge, MADV_DONTNEED), 0);
  EXPECT_EQ(Peek(m.data + 2 * kHuge), 0);
  std::set<size_t> got = CollectHuge(tracker_.get(), m.data, kHuge);
  EXPECT_TRUE(got.count(2)) << "a dropped huge page reads zero: it must be reported";
  Poke(m.data + 3 * kHuge + 1, 1);
  got = CollectHuge(tracker_.get(), m.data, kHuge);
  EXPECT_TRUE(got.count(3));
}

TEST_P(TrackerKindsTest, PrivateMemfdMapping) {
  // MAP_PRIVATE of a memfd: writes go to private copies of the file's pages.
  Mapping file(16 * Pg(), MemKind::kMemfdShared);
  std::memset(file.data(), 9, file.size());
  void* p = mmap(nullptr, file.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, file.memfd(), 0);
  ASSERT_NE(p, MAP_FAILED);
  char* m = static_cast<char*>(p);
  for (size_t i = 0; i < 16; ++i) (void)Peek(m + i * Pg());  // mapped, not written
  ASSERT_TRUE(tracker_->Track(m, file.size()).ok());
  EXPECT_TRUE(CollectPages(tracker_.get(), m, 16).empty());
  Poke(m + 4 * Pg(), 1);
  Poke(m + 11 * Pg() + 7, 1);
  EXPECT_EQ(CollectPages(tracker_.get(), m, 16), (std::set<size_t>{4, 11}));
  EXPECT_EQ(Peek(file.page(4)), 9) << "the private write must not reach the file";
  ASSERT_TRUE(tracker_->Untrack(m, file.size()).ok());
  munmap(p, file.size());
}

INSTANTIATE_TEST_SUITE_P(Backends, TrackerKindsTest,
                         ::testing::Values(TrackBackend::kUffdWpAsync, TrackBackend::kUffdWp,
                                           TrackBackend::kMprotect),
                         BackendParamName);

}  // namespace
}  // namespace pagewise::testing
