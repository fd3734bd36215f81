// Snapshots and eager restores of hugetlbfs memory: the image records the
// region's huge page size, a layer holds whole huge pages, a restore maps
// hugetlbfs memory of that size and gets every byte back; a page size that
// does not match the memory, a region not aligned to it, and existing
// memory of another page size are refused, naming the cause.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/snapshot.h"
#include "pagewise/tracker.h"
#include "sys/env.h"
#include "sys/smaps.h"
#include "testing/hugepages.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

constexpr size_t kHuge = 2 << 20;

// Private anonymous hugetlbfs memory of `pages` huge pages, each filled
// with a pattern of its index and `seed`.
struct HugeMemory {
  explicit HugeMemory(size_t pages, int seed = 1) : len(pages * kHuge) {
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
                   -1, 0);
    if (p == MAP_FAILED) return;
    data = static_cast<char*>(p);
    for (size_t i = 0; i < len; i += 4096) data[i] = static_cast<char>(i / kHuge * 7 + seed + i);
  }
  ~HugeMemory() {
    if (data != nullptr) munmap(data, len);
  }
  size_t len;
  char* data = nullptr;
};

uint64_t PageSizeAt(const void* p, size_t len) {
  const uint64_t a = reinterpret_cast<uint64_t>(p);
  Result<uint64_t> ps = sys::RangePageSize(Env::Default(), a, a + len, "test");
  return ps.ok() ? *ps : 0;
}

TEST(SnapshotKinds, HugetlbfsImageRecordsThePageSizeAndRestoresIntoHugePages) {
  testing::HugePagePool pool(kHuge, 8);  // 4 for the source, 4 for the restore
  ASSERT_TRUE(pool.ok()) << pool.reason();
  HugeMemory src(4);
  ASSERT_NE(src.data, nullptr);
  Result<Region> region = RegionFromMaps(src.data, src.len, "guest");
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  EXPECT_EQ(region->page_size, kHuge);
  testing::TempDir dir;
  const std::string base = dir.File("base.pwi");
  Result<SnapshotStats> st = SnapshotFull({*region}, base);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->pages_read, 4u);

  // A write anywhere in a huge page puts the whole page in the layer.
  Result<std::unique_ptr<Tracker>> t = Tracker::Create({.backend = TrackBackend::kUffdWpAsync});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->Track(src.data, src.len).ok());
  src.data[2 * kHuge + 12345] = 'L';
  std::vector<PageRange> written;
  ASSERT_TRUE((*t)->Collect(&written).ok());
  const std::string layer = dir.File("layer.pwi");
  st = SnapshotIncremental(written, {*region}, base, layer);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->pages_read, 1u);

  Result<std::unique_ptr<Image>> img = Image::Open(layer);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  ASSERT_EQ((*img)->regions().size(), 1u);
  EXPECT_EQ((*img)->regions()[0].page_size, kHuge) << "the page size is recorded";
  Result<std::unique_ptr<RestoredMemory>> r = RestoreEager(**img);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const RestoredRegion& out = (*r)->regions()[0];
  EXPECT_EQ(PageSizeAt(out.data, src.len), kHuge) << "restored into hugetlbfs memory";
  EXPECT_EQ(std::memcmp(out.data, src.data, src.len), 0);
}

TEST(SnapshotKinds, PageSizeThatDoesNotMatchTheMemoryIsRefused) {
  testing::HugePagePool pool(kHuge, 2);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  HugeMemory huge(2);
  ASSERT_NE(huge.data, nullptr);
  testing::Mapping small(2 * kHuge);
  testing::TempDir dir;
  // 4 KiB memory claimed as 2 MiB pages.
  Region r = MakeRegion(small.data(), small.size());
  r.page_size = kHuge;
  Result<SnapshotStats> st = SnapshotFull({r}, dir.File("a.pwi"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), Code::kInvalidArgument);
  EXPECT_NE(st.status().message().find("page size 4096"), std::string::npos)
      << st.status().ToString();
  // A huge-page region not aligned to its page size.
  Region half = MakeRegion(huge.data, kHuge / 2);
  half.page_size = kHuge;
  st = SnapshotFull({half}, dir.File("b.pwi"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), Code::kInvalidArgument);
  EXPECT_NE(st.status().message().find("aligned"), std::string::npos) << st.status().ToString();
  // RegionFromMaps of a range that cuts a huge page.
  Result<Region> cut = RegionFromMaps(huge.data, kHuge + 4096);
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("whole huge pages"), std::string::npos)
      << cut.status().ToString();
}

TEST(SnapshotKinds, RestoreIntoExistingMemoryOfAnotherPageSizeTouchesNothing) {
  testing::HugePagePool pool(kHuge, 2);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  HugeMemory huge(2);
  ASSERT_NE(huge.data, nullptr);
  Result<Region> region = RegionFromMaps(huge.data, huge.len);
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  testing::TempDir dir;
  const std::string path = dir.File("huge.pwi");
  ASSERT_TRUE(SnapshotFull({*region}, path).ok());
  // Put 4 KiB memory where the huge pages were, then restore in place.
  void* moved = mmap(huge.data, huge.len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(moved, huge.data);
  huge.data = nullptr;  // now 4 KiB memory: unmapped below
  std::memset(moved, 0x5A, huge.len);
  EagerRestoreOptions o;
  o.placement = RestorePlacement::kOverwriteInPlace;
  Result<std::unique_ptr<RestoredMemory>> r = RestoreEager(path, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("page size 2097152"), std::string::npos)
      << r.status().ToString();
  const char* p = static_cast<const char*>(moved);
  EXPECT_EQ(p[0], 0x5A) << "nothing was touched";
  EXPECT_EQ(p[huge.len - 1], 0x5A);
  munmap(moved, huge.len);
}

}  // namespace
}  // namespace pagewise
