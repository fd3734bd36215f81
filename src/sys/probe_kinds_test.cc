// The memory-kind probe on the real kernel: every capability it reports as
// supported really works (a fill or write-protect on that kind of memory
// succeeds); one it reports unsupported says why; injected failures are
// recorded, never fatal; the pool counters follow a reservation.
#include "sys/probe_kinds.h"

#include <gtest/gtest.h>
#include <linux/memfd.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "pagewise/probe.h"
#include "sys/probe_env.h"
#include "sys/userfaultfd.h"
#include "testing/fault_env.h"
#include "testing/hugepages.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using ::pagewise::testing::FaultEnv;
using ::pagewise::testing::HugePagePool;
using ::pagewise::testing::Op;

constexpr uint64_t kHuge = 2 << 20;

TEST(ProbeKindsTest, ReportsEveryCapabilityOnceInEnumOrder) {
  const KernelFeatures& f = Features();
  ASSERT_EQ(f.memory_kinds.size(), static_cast<size_t>(kMemoryCapabilityCount));
  for (int i = 0; i < kMemoryCapabilityCount; ++i) {
    const MemoryKindSupport& k = f.memory_kinds[i];
    EXPECT_EQ(static_cast<int>(k.capability), i);
    EXPECT_EQ(k.supported, k.reason.empty()) << MemoryCapabilityName(k.capability);
    EXPECT_FALSE(k.memory.empty());
    if (!k.supported) {
      Status s = RequireMemoryKind(f, k.capability, "this test");
      EXPECT_EQ(s.code(), Code::kNotSupported);
      EXPECT_NE(s.message().find(MemoryCapabilityName(k.capability)), std::string::npos);
      EXPECT_NE(s.message().find(k.reason), std::string::npos) << s.ToString();
    }
  }
}

// A capability the probe calls supported works on a real mapping of its kind.
TEST(ProbeKindsTest, SupportedShmemCapabilitiesWork) {
  const KernelFeatures& f = Features();
  const size_t page = PageSize();
  if (!f.Supports(MemoryCapability::kMissingShmem) && !f.Supports(MemoryCapability::kMinorShmem)) {
    EXPECT_FALSE(f.kind(MemoryCapability::kMissingShmem).reason.empty());
    return;
  }
  testing::Mapping shm(4 * page, testing::MemKind::kMemfdShared);
  if (f.Supports(MemoryCapability::kMissingShmem)) {
    sys::Userfaultfd::Options o;
    o.required_features = uffd_feature::kMissingShmem;
    Result<sys::Userfaultfd> u = sys::Userfaultfd::Open(o);
    ASSERT_TRUE(u.ok()) << u.status().ToString();
    ASSERT_TRUE(u->Register(shm.addr(), 2 * page, UFFDIO_REGISTER_MODE_MISSING).ok());
    std::vector<char> src(page, 'q');
    FillResult r = u->Copy(shm.addr(), src.data(), page);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(shm.data()[page - 1], 'q');
  }
  if (f.Supports(MemoryCapability::kMinorShmem)) {
    // Content in the page cache through pwrite; a MINOR-registered view maps it.
    ASSERT_EQ(pwrite(shm.memfd(), "minor!", 6, 3 * page), 6);
    void* view = mmap(nullptr, page, PROT_READ, MAP_SHARED, shm.memfd(), 3 * page);
    ASSERT_NE(view, MAP_FAILED);
    sys::Userfaultfd::Options o;
    o.required_features = uffd_feature::kMinorShmem;
    Result<sys::Userfaultfd> u = sys::Userfaultfd::Open(o);
    ASSERT_TRUE(u.ok());
    ASSERT_TRUE(
        u->Register(reinterpret_cast<uint64_t>(view), page, UFFDIO_REGISTER_MODE_MINOR).ok());
    FillResult r = u->Continue(reinterpret_cast<uint64_t>(view), page);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(std::memcmp(view, "minor!", 6), 0);
    munmap(view, page);
  }
}

TEST(ProbeKindsTest, SupportedHugetlbfsCopyWorksWithAReservedPage) {
  const KernelFeatures& f = Features();
  if (!f.Supports(MemoryCapability::kMissingHugetlbfs)) {
    EXPECT_FALSE(f.kind(MemoryCapability::kMissingHugetlbfs).reason.empty());
    return;
  }
  HugePagePool pool(kHuge, 1);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  void* mem = mmap(nullptr, kHuge, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  ASSERT_NE(mem, MAP_FAILED) << strerror(errno);
  sys::Userfaultfd::Options o;
  o.required_features = uffd_feature::kMissingHugetlbfs;
  Result<sys::Userfaultfd> u = sys::Userfaultfd::Open(o);
  ASSERT_TRUE(u.ok());
  const uint64_t at = reinterpret_cast<uint64_t>(mem);
  ASSERT_TRUE(u->Register(at, kHuge, UFFDIO_REGISTER_MODE_MISSING).ok());
  std::vector<char> src(kHuge, 'h');
  // Less than a whole huge page is refused; a whole one is installed.
  EXPECT_EQ(u->Copy(at, src.data(), PageSize()).error, EINVAL);
  FillResult r = u->Copy(at, src.data(), kHuge);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(static_cast<char*>(mem)[kHuge - 1], 'h');
  munmap(mem, kHuge);
}

TEST(ProbeKindsTest, PoolCountersFollowAReservation) {
  const KernelFeatures& f = Features();
  ASSERT_NE(f.default_huge_page_size, 0u) << "this kernel has hugetlbfs";
  ASSERT_FALSE(f.huge_page_pools.empty());
  Result<HugePagePoolInfo> before = ReadHugePagePool(kHuge);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  {
    HugePagePool pool(kHuge, 2);
    ASSERT_TRUE(pool.ok()) << pool.reason();
    Result<HugePagePoolInfo> during = ReadHugePagePool(kHuge);
    ASSERT_TRUE(during.ok());
    EXPECT_GE(during->available(), 2u);
    EXPECT_TRUE(RequireHugePages(kHuge, 2, "test").ok());
  }
  // An impossible demand names the file to write.
  Status s = RequireHugePages(kHuge, 1ULL << 40, "restoring 2 MiB guest memory");
  EXPECT_EQ(s.code(), Code::kResourceExhausted);
  EXPECT_NE(s.message().find("/proc/sys/vm/nr_hugepages"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("restoring 2 MiB guest memory"), std::string::npos);
  EXPECT_EQ(ReadHugePagePool(12345).status().code(), Code::kNotFound);
}

TEST(ProbeKindsTest, InjectedFailuresAreRecordedNotFatal) {
  FaultEnv env;
  env.Inject(Op::kMemfdCreate, {.error = EMFILE, .count = -1});
  env.Inject(Op::kMmap, {.error = ENOMEM, .count = -1});
  KernelFeatures f = ProbeKernel(&env);
  ASSERT_EQ(f.memory_kinds.size(), static_cast<size_t>(kMemoryCapabilityCount));
  for (const MemoryKindSupport& k : f.memory_kinds) {
    EXPECT_FALSE(k.supported) << MemoryCapabilityName(k.capability);
    EXPECT_NE(k.reason.find("scratch memory"), std::string::npos) << k.reason;
  }
}

}  // namespace
}  // namespace pagewise
