// sys::ReadMappings / RangePageSize against real mappings of each kind;
// the maps line parser and ReadMaps.
#include "sys/smaps.h"

#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>

#include "sys/userfaultfd.h"
#include "testing/hugepages.h"
#include "testing/test_util.h"

namespace pagewise::sys {
namespace {

using ::pagewise::testing::Mapping;
using ::pagewise::testing::MemKind;

constexpr uint64_t kHuge = 2 << 20;

TEST(SmapsTest, AnonymousAndSharedMemoryHaveTheBasePageSize) {
  Mapping anon(8 * PageSize()), shm(8 * PageSize(), MemKind::kMemfdShared);
  Result<std::vector<MappingInfo>> a =
      ReadMappings(Env::Default(), 0, anon.addr(), anon.addr() + 1);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_EQ(a->size(), 1u);
  EXPECT_EQ((*a)[0].page_size, PageSize());
  EXPECT_FALSE((*a)[0].hugetlb());
  EXPECT_FALSE((*a)[0].shared);
  Result<std::vector<MappingInfo>> s = ReadMappings(Env::Default(), 0, shm.addr(), shm.addr() + 1);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->size(), 1u);
  EXPECT_TRUE((*s)[0].shared);
  EXPECT_TRUE((*s)[0].HasFlag("sh"));
  EXPECT_NE((*s)[0].path.find("memfd:"), std::string::npos) << (*s)[0].path;
  EXPECT_NE((*s)[0].inode, 0u);
  Result<uint64_t> ps = RangePageSize(Env::Default(), anon.addr(), anon.addr() + anon.size(), "t");
  ASSERT_TRUE(ps.ok());
  EXPECT_EQ(*ps, PageSize());
}

TEST(SmapsTest, HugetlbfsPageSizeAndAlignment) {
  testing::HugePagePool pool(kHuge, 2);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  void* p = mmap(nullptr, 2 * kHuge, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  const uint64_t a = reinterpret_cast<uint64_t>(p);
  Result<std::vector<MappingInfo>> m = ReadMappings(Env::Default(), 0, a, a + 2 * kHuge);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ((*m)[0].page_size, kHuge);
  EXPECT_TRUE((*m)[0].hugetlb());
  Result<uint64_t> ps = RangePageSize(Env::Default(), a, a + 2 * kHuge, "t");
  ASSERT_TRUE(ps.ok()) << ps.status().ToString();
  EXPECT_EQ(*ps, kHuge);
  Result<uint64_t> bad = RangePageSize(Env::Default(), a + PageSize(), a + kHuge, "restore");
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("2097152"), std::string::npos);
  munmap(p, 2 * kHuge);
}

TEST(SmapsTest, UserfaultfdRegistrationModesShowInVmFlags) {
  Mapping shm(4 * PageSize(), MemKind::kMemfdShared);
  Userfaultfd::Options o;
  o.required_features = UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM;
  Result<Userfaultfd> u = Userfaultfd::Open(o);
  ASSERT_TRUE(u.ok());
  ASSERT_TRUE(
      u->Register(shm.addr(), shm.size(), UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_MISSING)
          .ok());
  Result<std::vector<MappingInfo>> m = ReadMappings(Env::Default(), 0, shm.addr(), shm.addr() + 1);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 1u);
  EXPECT_TRUE((*m)[0].uffd_minor()) << (*m)[0].vm_flags;
  EXPECT_TRUE((*m)[0].uffd_missing()) << (*m)[0].vm_flags;
  EXPECT_FALSE((*m)[0].uffd_wp()) << (*m)[0].vm_flags;
}

TEST(SmapsTest, MapsLinesParseWithAndWithoutPath) {
  MappingInfo m;
  ASSERT_TRUE(ParseMapsLine(
      "7f0000001000-7f0000003000 r-xs 00002000 fd:01 1234    /memfd:vm (deleted)", &m));
  EXPECT_EQ(m.start, 0x7f0000001000u);
  EXPECT_EQ(m.end, 0x7f0000003000u);
  EXPECT_EQ(m.prot(), PROT_READ | PROT_EXEC);
  EXPECT_TRUE(m.shared);
  EXPECT_EQ(m.offset, 0x2000u);
  EXPECT_EQ(m.dev_major, 0xfdu);
  EXPECT_EQ(m.dev_minor, 1u);
  EXPECT_EQ(m.inode, 1234u);
  EXPECT_EQ(m.path, "/memfd:vm (deleted)");
  EXPECT_TRUE(m.shmem());
  MappingInfo anon;
  ASSERT_TRUE(ParseMapsLine("1000-2000 rw-p 00000000 00:00 0 ", &anon));
  EXPECT_EQ(anon.prot(), PROT_READ | PROT_WRITE);
  EXPECT_FALSE(anon.shared);
  EXPECT_EQ(anon.path, "");
  EXPECT_FALSE(anon.shmem());
  MappingInfo bad;
  EXPECT_FALSE(ParseMapsLine("KernelPageSize:        4 kB", &bad));
  EXPECT_FALSE(ParseMapsLine("2000-1000 rw-p 00000000 00:00 0", &bad));  // end before start
  EXPECT_FALSE(ParseMapsLine("1000-2000 rw", &bad));
  EXPECT_TRUE(MappingInfo::IsShmemPath("/dev/shm/x"));
  EXPECT_TRUE(MappingInfo::IsShmemPath("/SYSV00000000 (deleted)"));
  EXPECT_FALSE(MappingInfo::IsShmemPath("/usr/lib/libc.so.6"));
}

TEST(SmapsTest, ReadMapsSeesAFreshSharedMapping) {
  Mapping shm(4 * PageSize(), MemKind::kMemfdShared);
  Result<std::vector<MappingInfo>> maps = ReadMaps(Env::Default(), 0);
  ASSERT_TRUE(maps.ok()) << maps.status().ToString();
  bool found = false;
  for (size_t i = 0; i < maps->size(); ++i) {
    if (i > 0) {
      EXPECT_LE((*maps)[i - 1].end, (*maps)[i].start);  // sorted
    }
    const MappingInfo& m = (*maps)[i];
    if (m.start == shm.addr()) {
      found = true;
      EXPECT_EQ(m.end, shm.addr() + 4 * PageSize());
      EXPECT_TRUE(m.shmem()) << m.path;
      EXPECT_EQ(m.page_size, 0u);  // maps has no page size: smaps does
    }
  }
  EXPECT_TRUE(found);
}

TEST(SmapsTest, UnmappedRangeIsNamed) {
  Mapping m(4 * PageSize());
  ASSERT_EQ(munmap(m.page(2), PageSize()), 0);
  Result<uint64_t> ps = RangePageSize(Env::Default(), m.addr(), m.addr() + m.size(), "Track");
  EXPECT_EQ(ps.status().code(), Code::kInvalidArgument);
  EXPECT_NE(ps.status().message().find("not mapped"), std::string::npos);
}

}  // namespace
}  // namespace pagewise::sys
