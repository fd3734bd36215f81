// Lazy restore into hugetlbfs memory, in process, against the real kernel:
// byte-exact content (data, zero and partly zero huge pages), whole-huge-
// page demand faults, MADV_DONTNEED, mremap, munmap and fork during the
// restore, repeated runs; and the bad inputs (a page size that does not
// match the memory, unaligned regions, an empty pool, 1 GiB pages where the
// pool has none) failing with clear errors and nothing left registered.
//
// Huge pages are reserved through testing::HugePagePool (it adds to the
// pool and gives back exactly what it added).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <vector>

#include "pagewise/probe.h"
#include "pagewise/restore.h"
#include "sys/smaps.h"
#include "testing/hugepages.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

constexpr uint64_t kHuge = 2ULL << 20;
constexpr uint64_t kGiant = 1ULL << 30;

// A flat source of `pages` huge pages: huge page k is all zero when
// k % 4 == 2; otherwise its 4 KiB pages hold a pattern, every 7th zero.
class HugeBuffer {
 public:
  HugeBuffer(size_t pages, uint64_t seed) : bytes_(pages * kHuge, 0) {
    const size_t small = PageSize();
    for (size_t k = 0; k < pages; ++k) {
      if (k % 4 == 2) continue;
      for (size_t j = 0; j < kHuge / small; ++j) {
        if (j % 7 == 3) continue;
        testing::FillPage(bytes_.data() + k * kHuge + j * small, seed, k * 1000 + j);
      }
    }
  }
  const char* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  size_t pages() const { return bytes_.size() / kHuge; }
  bool Matches(const char* p, size_t page) const {
    return std::memcmp(p, bytes_.data() + page * kHuge, kHuge) == 0;
  }

 private:
  std::vector<char> bytes_;
};

bool AllZero(const char* p, size_t n) {
  static const std::vector<char> zeros(1 << 20, 0);
  for (size_t i = 0; i < n; i += zeros.size()) {
    if (std::memcmp(p + i, zeros.data(), std::min(zeros.size(), n - i)) != 0) return false;
  }
  return true;
}

// True if some mapping of this process is still registered with a
// userfaultfd (a failed restore must leave none).
bool AnyRangeRegistered() {
  auto maps = sys::ReadMappings(Env::Default(), 0, 0, ~0ULL);
  if (!maps.ok()) return true;
  for (const sys::MappingInfo& m : *maps) {
    if (m.uffd_missing() || m.uffd_minor()) return true;
  }
  return false;
}

Region HugeRegion(uint64_t address, uint64_t length, uint64_t offset) {
  Region r;
  r.address = address;
  r.length = length;
  r.offset = offset;
  r.page_size = kHuge;
  return r;
}

// A restore of all of `buf` kept serving events after residency (so that
// an event is seen even when the filler won); with background fill or
// faults only.
Result<std::unique_ptr<LazyRestore>> StartWhileEventsMatter(const HugeBuffer& buf,
                                                            bool background) {
  RestoreOptions o;
  o.fill.background_fill = background;
  o.release_when_resident = false;
  return LazyRestore::Start(MemorySource(buf.data(), buf.size()), {HugeRegion(0, buf.size(), 0)},
                            o);
}

// Reserves `pages` 2 MiB pages for a test, failing it (never skipping: the
// pool is root's to grow) if the kernel cannot give them.
#define RESERVE_OR_FAIL(pool, pages)          \
  testing::HugePagePool pool(kHuge, (pages)); \
  ASSERT_TRUE(pool.ok()) << pool.reason();

TEST(HugetlbLazyRestore, RestoresEveryByteIntoHugePagesRepeatedly) {
  RESERVE_OR_FAIL(pool, 8);
  HugeBuffer buf(8, 1);
  for (int rep = 0; rep < 4; ++rep) {
    RestoreOptions o;
    o.fill.background_fill = rep % 2 == 0;  // odd reps: faults only, then Finish
    auto r =
        LazyRestore::Start(MemorySource(buf.data(), buf.size()), {HugeRegion(0, buf.size(), 0)}, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const char* mem = (*r)->data(0);
    ASSERT_EQ(reinterpret_cast<uint64_t>(mem) % kHuge, 0u);
    size_t bad = 0;
    for (size_t k = 0; k < buf.pages(); ++k) bad += !buf.Matches(mem + k * kHuge, k);
    EXPECT_EQ(bad, 0u) << "rep " << rep;
    ASSERT_TRUE((*r)->Finish().ok());
    auto ps = sys::RangePageSize(Env::Default(), reinterpret_cast<uint64_t>(mem),
                                 reinterpret_cast<uint64_t>(mem) + buf.size(), "restored");
    ASSERT_TRUE(ps.ok()) << ps.status().ToString();
    EXPECT_EQ(*ps, kHuge);
    const RestoreStats st = (*r)->stats();
    EXPECT_EQ(st.pages_total, 8u);
    EXPECT_EQ(st.pages_demand + st.pages_background + st.eexist_pages, 8u);
    // Huge pages 2 and 6 are zero: copied from a zero page (no ZEROPAGE on
    // hugetlbfs), everything else copied whole.
    EXPECT_EQ(st.zero_pages, 2u);
    EXPECT_EQ(st.bytes_copied, 6 * kHuge);
  }
  EXPECT_FALSE(AnyRangeRegistered());
}

TEST(HugetlbLazyRestore, DemandFaultFillsOneWholeHugePage) {
  RESERVE_OR_FAIL(pool, 6);
  HugeBuffer buf(6, 2);
  RestoreOptions o;
  o.fill.background_fill = false;
  auto r =
      LazyRestore::Start(MemorySource(buf.data(), buf.size()), {HugeRegion(0, buf.size(), 0)}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const char* mem = (*r)->data(0);
  // A read of one byte in the middle of huge page 3 brings in all of it.
  volatile char c = mem[3 * kHuge + kHuge / 2 + 5];
  (void)c;
  EXPECT_TRUE(buf.Matches(mem + 3 * kHuge, 3));
  RestoreStats st = (*r)->stats();
  EXPECT_EQ(st.demand_faults, 1u);
  EXPECT_TRUE(buf.Matches(mem + 4 * kHuge, 4));
  EXPECT_EQ((*r)->stats().demand_faults, 2u);
  ASSERT_TRUE((*r)->Finish().ok());
  for (size_t k = 0; k < buf.pages(); ++k) EXPECT_TRUE(buf.Matches(mem + k * kHuge, k)) << k;
  st = (*r)->stats();
  EXPECT_EQ(st.pages_demand, 2u);
  EXPECT_EQ(st.pages_demand + st.pages_background, 6u);
}

TEST(HugetlbLazyRestore, CallerGivenHugetlbMemoryAndImageOffsets) {
  RESERVE_OR_FAIL(pool, 4);
  HugeBuffer buf(6, 3);
  void* m = mmap(nullptr, 4 * kHuge, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT), -1, 0);
  ASSERT_NE(m, MAP_FAILED) << strerror(errno);
  const uint64_t base = reinterpret_cast<uint64_t>(m);
  // Two regions from flat huge pages 1..2 and 4..5.
  auto r = LazyRestore::Start(
      MemorySource(buf.data(), buf.size()),
      {HugeRegion(base, 2 * kHuge, kHuge), HugeRegion(base + 2 * kHuge, 2 * kHuge, 4 * kHuge)});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const char* mem = static_cast<const char*>(m);
  EXPECT_TRUE(buf.Matches(mem, 1));
  EXPECT_TRUE(buf.Matches(mem + kHuge, 2));
  EXPECT_TRUE(buf.Matches(mem + 2 * kHuge, 4));
  EXPECT_TRUE(buf.Matches(mem + 3 * kHuge, 5));
  ASSERT_TRUE((*r)->Finish().ok());
  r->reset();
  // Caller-given memory stays mapped after the restore.
  EXPECT_TRUE(buf.Matches(mem + 3 * kHuge, 5));
  ASSERT_EQ(munmap(m, 4 * kHuge), 0);
}

TEST(HugetlbLazyRestore, DontneedDuringRestoreReadsZerosAtHugePageGranularity) {
  RESERVE_OR_FAIL(pool, 8);
  HugeBuffer buf(8, 4);
  for (int rep = 0; rep < 3; ++rep) {
    auto r = StartWhileEventsMatter(buf, rep == 2);  // rep 2: the filler races the madvise
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    char* mem = (*r)->data(0);
    ASSERT_TRUE(buf.Matches(mem + kHuge, 1));  // filled, then dropped
    ASSERT_EQ(madvise(mem + kHuge, kHuge, MADV_DONTNEED), 0);
    // Huge pages 4..5 dropped before anything touched them (unless the
    // filler won): zeros either way, never source data.
    ASSERT_EQ(madvise(mem + 4 * kHuge, 2 * kHuge, MADV_DONTNEED), 0);
    EXPECT_TRUE(AllZero(mem + kHuge, kHuge)) << "rep " << rep;
    EXPECT_TRUE(AllZero(mem + 4 * kHuge, 2 * kHuge)) << "rep " << rep;
    for (size_t k : {0, 2, 3, 6, 7}) EXPECT_TRUE(buf.Matches(mem + k * kHuge, k)) << k;
    ASSERT_TRUE((*r)->Finish().ok());
    EXPECT_GE((*r)->stats().removes, 2u);
    EXPECT_TRUE(AllZero(mem + 4 * kHuge, 2 * kHuge));
  }
}

TEST(HugetlbLazyRestore, MremapAndMunmapDuringRestore) {
  RESERVE_OR_FAIL(pool, 8);
  HugeBuffer buf(8, 5);
  for (int rep = 0; rep < 3; ++rep) {
    auto r = StartWhileEventsMatter(buf, rep == 2);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    (*r)->Release();  // the test moves and unmaps the memory itself
    char* mem = (*r)->data(0);
    ASSERT_TRUE(buf.Matches(mem + 2 * kHuge, 2));
    // Move huge pages [2, 5) (one filled, two not) to a huge-page-aligned
    // place: the content follows them.
    void* hole = mmap(nullptr, 3 * kHuge, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT), -1, 0);
    ASSERT_NE(hole, MAP_FAILED) << strerror(errno);
    void* moved =
        mremap(mem + 2 * kHuge, 3 * kHuge, 3 * kHuge, MREMAP_MAYMOVE | MREMAP_FIXED, hole);
    ASSERT_EQ(moved, hole) << strerror(errno);
    const char* mv = static_cast<const char*>(moved);
    for (size_t k = 0; k < 3; ++k) EXPECT_TRUE(buf.Matches(mv + k * kHuge, 2 + k)) << k;
    // Unmap huge page 6 unread: the restore forgets it and completes.
    ASSERT_EQ(munmap(mem + 6 * kHuge, kHuge), 0);
    for (size_t k : {0, 1, 5, 7}) EXPECT_TRUE(buf.Matches(mem + k * kHuge, k)) << k;
    ASSERT_TRUE((*r)->Finish().ok());
    const RestoreStats st = (*r)->stats();
    EXPECT_GE(st.remaps, 1u);
    EXPECT_GE(st.unmaps, 1u);
    ASSERT_EQ(munmap(mem, 2 * kHuge), 0);
    ASSERT_EQ(munmap(mem + 5 * kHuge, kHuge), 0);
    ASSERT_EQ(munmap(mem + 7 * kHuge, kHuge), 0);
    ASSERT_EQ(munmap(moved, 3 * kHuge), 0);
  }
}

TEST(HugetlbLazyRestore, ForkDuringRestoreServesTheChildEveryByte) {
  // The child's copy-on-write and its unfilled pages need pages beyond the
  // parent's reservation.
  RESERVE_OR_FAIL(pool, 16);
  HugeBuffer buf(6, 6);
  for (int rep = 0; rep < 3; ++rep) {
    auto r = StartWhileEventsMatter(buf, rep == 2);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    char* mem = (*r)->data(0);
    ASSERT_TRUE(buf.Matches(mem, 0));
    ASSERT_EQ(madvise(mem + 5 * kHuge, kHuge, MADV_DONTNEED), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int bad = 0;
      for (size_t k = 0; k < 5; ++k) bad += !buf.Matches(mem + k * kHuge, k);
      bad += !AllZero(mem + 5 * kHuge, kHuge);
      _exit(bad);
    }
    size_t bad = 0;
    for (size_t k = 0; k < 5; ++k) bad += !buf.Matches(mem + k * kHuge, k);
    // The parent writes; the child must still see the source (it checks in
    // its own copy).
    std::memset(mem + kHuge, 0x5a, 64);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFEXITED(wstatus)) << "child died: status " << wstatus;
    EXPECT_EQ(WEXITSTATUS(wstatus), 0) << "child saw wrong huge pages, rep " << rep;
    EXPECT_EQ(bad, 0u) << "rep " << rep;
    ASSERT_TRUE((*r)->Finish().ok());
    EXPECT_GE((*r)->stats().forks, 1u);
  }
}

// ---- bad input ----------------------------------------------------------------

TEST(HugetlbLazyRestore, PageSizeNotMatchingTheMemoryIsRefused) {
  HugeBuffer buf(2, 7);
  // 2 MiB claimed over 4 KiB anonymous memory.
  void* small =
      mmap(nullptr, 3 * kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(small, MAP_FAILED);
  const uint64_t aligned = (reinterpret_cast<uint64_t>(small) + kHuge - 1) & ~(kHuge - 1);
  auto r =
      LazyRestore::Start(MemorySource(buf.data(), buf.size()), {HugeRegion(aligned, kHuge, 0)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
  EXPECT_NE(r.status().message().find("page size 4096"), std::string::npos)
      << r.status().ToString();
  EXPECT_FALSE(AnyRangeRegistered());
  ASSERT_EQ(munmap(small, 3 * kHuge), 0);

  // 4 KiB claimed over hugetlbfs memory.
  RESERVE_OR_FAIL(pool, 1);
  void* huge = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT), -1, 0);
  ASSERT_NE(huge, MAP_FAILED) << strerror(errno);
  auto r2 = LazyRestore::Start(MemorySource(buf.data(), buf.size()),
                               {{reinterpret_cast<uint64_t>(huge), kHuge, 0}});
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.status().code(), Code::kInvalidArgument) << r2.status().ToString();
  EXPECT_NE(r2.status().message().find("page size 2097152"), std::string::npos)
      << r2.status().ToString();
  EXPECT_FALSE(AnyRangeRegistered());
  ASSERT_EQ(munmap(huge, kHuge), 0);

  // Regions of two page sizes in one restore.
  auto r3 = LazyRestore::Start(MemorySource(buf.data(), buf.size()),
                               {HugeRegion(0, kHuge, 0), {0, kHuge, kHuge}});
  ASSERT_FALSE(r3.ok());
  EXPECT_EQ(r3.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r3.status().message().find("separately"), std::string::npos) << r3.status().ToString();
  // A page size without a pool.
  Region odd = HugeRegion(0, 4 * kHuge, 0);
  odd.page_size = 4 * kHuge;
  auto r4 = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {odd});
  ASSERT_FALSE(r4.ok());
  EXPECT_NE(r4.status().message().find("pagewise probe"), std::string::npos)
      << r4.status().ToString();
  EXPECT_FALSE(AnyRangeRegistered());
}

TEST(HugetlbLazyRestore, UnalignedRegionsAreRefused) {
  HugeBuffer buf(3, 8);
  const std::vector<Region> bad = {
      HugeRegion(0, kHuge + PageSize(), 0),      // not whole huge pages
      HugeRegion(0, kHuge, PageSize()),          // source offset inside a huge page
      HugeRegion(kHuge + PageSize(), kHuge, 0),  // address inside a huge page
  };
  for (const Region& region : bad) {
    auto r = LazyRestore::Start(MemorySource(buf.data(), buf.size()), {region});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
    EXPECT_NE(r.status().message().find("whole huge pages"), std::string::npos)
        << r.status().ToString();
  }
  EXPECT_FALSE(AnyRangeRegistered());
}

TEST(HugetlbLazyRestore, ShortPoolFailsNamingThePoolAndLeavesNothing) {
  // More pages than the pool can give: the mapping is reserved up front, so
  // the restore fails before anything is registered or touched.
  auto info = ReadHugePagePool(kHuge);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  const uint64_t pages = info->available() + 64;
  Region r = HugeRegion(0, pages * kHuge, 0);
  std::vector<char> none(1);  // never read: the restore fails first
  auto src = MemorySource(none.data(), pages * kHuge);
  auto res = LazyRestore::Start(src, {r});
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), Code::kResourceExhausted) << res.status().ToString();
  EXPECT_NE(res.status().message().find("nr_hugepages"), std::string::npos)
      << res.status().ToString();
  EXPECT_FALSE(AnyRangeRegistered());
}

TEST(HugetlbLazyRestore, OneGigabytePagesWhereThePoolAllowsElseAClearError) {
  testing::HugePagePool pool(kGiant, 1);
  std::cerr << "1 GiB pool: " << (pool.ok() ? "a page is available" : pool.reason()) << "\n";
  // Mostly zero source (only its first and last 4 KiB hold data): the
  // restore still copies the whole page.
  void* src = mmap(nullptr, kGiant, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(src, MAP_FAILED);
  char* s = static_cast<char*>(src);
  testing::FillPage(s, 9, 0);
  testing::FillPage(s + kGiant - PageSize(), 9, 1);
  Region r;
  r.length = kGiant;
  r.page_size = kGiant;
  auto res = LazyRestore::Start(MemorySource(s, kGiant), {r});
  if (!pool.ok()) {
    // This machine cannot give a 1 GiB page now: the restore must say so.
    ASSERT_FALSE(res.ok()) << "restored into 1 GiB pages the pool does not have";
    EXPECT_EQ(res.status().code(), Code::kResourceExhausted) << res.status().ToString();
    EXPECT_NE(res.status().message().find("hugepages-1048576kB"), std::string::npos)
        << res.status().ToString();
    EXPECT_FALSE(AnyRangeRegistered());
  } else {
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    const char* mem = (*res)->data(0);
    EXPECT_EQ(std::memcmp(mem, s, PageSize()), 0);
    EXPECT_EQ(std::memcmp(mem + kGiant - PageSize(), s + kGiant - PageSize(), PageSize()), 0);
    ASSERT_TRUE((*res)->Finish().ok());
    // Every other byte is zero in the source (compared without reading the
    // source's untouched pages again).
    EXPECT_TRUE(AllZero(mem + PageSize(), kGiant - 2 * PageSize()));
    auto ps = sys::RangePageSize(Env::Default(), reinterpret_cast<uint64_t>(mem),
                                 reinterpret_cast<uint64_t>(mem) + kGiant, "restored");
    ASSERT_TRUE(ps.ok()) << ps.status().ToString();
    EXPECT_EQ(*ps, kGiant);
  }
  ASSERT_EQ(munmap(src, kGiant), 0);
}

}  // namespace
}  // namespace pagewise
