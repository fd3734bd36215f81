// Tests of the KVM guest and the sys::Kvm ioctls on the real /dev/kvm: the
// guest's CPL3 routines read and write exactly the host memory behind its
// slots, the dirty log sees its writes, and a UFFD_USER_MODE_ONLY
// userfaultfd on guest memory fails with an error that says so.
#include "kvm/guest.h"

#include <gtest/gtest.h>
#include <linux/userfaultfd.h>

#include <cstring>
#include <vector>

#include "sys/userfaultfd.h"
#include "testing/kvm_test_util.h"
#include "testing/test_util.h"

namespace pagewise::kvm {
namespace {

using ::pagewise::testing::FillPage;
using ::pagewise::testing::Mapping;

constexpr size_t kPage = 4096;

TEST(GuestTest, CompareReadsEveryByteTheHostHolds) {
  PAGEWISE_REQUIRE_KVM();
  Result<std::unique_ptr<Guest>> g = Guest::Create();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  const size_t len = 256 * kPage;
  Mapping a(len), b(len);
  for (size_t i = 0; i < len / kPage; ++i) {
    FillPage(a.page(i), 7, i);
    FillPage(b.page(i), 7, i);
  }
  Result<GuestSlot> sa = (*g)->AddMemory(a.addr(), len);
  Result<GuestSlot> sb = (*g)->AddMemory(b.addr(), len);
  ASSERT_TRUE(sa.ok() && sb.ok());
  Result<int64_t> r = (*g)->Compare(sa->guest_phys, sb->guest_phys, len);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, -1);
  // One byte changed at the host: the guest finds exactly that qword.
  b.data()[77 * kPage + 1234] ^= 0x40;
  uint64_t seen = 0;
  r = (*g)->Compare(sa->guest_phys, sb->guest_phys, len, &seen);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, static_cast<int64_t>((77 * kPage + 1234) / 8 * 8));
  uint64_t host = 0;
  std::memcpy(&host, a.data() + *r, 8);
  EXPECT_EQ(seen, host);
}

TEST(GuestTest, SumAndWritesReachHostMemory) {
  PAGEWISE_REQUIRE_KVM();
  Result<std::unique_ptr<Guest>> g = Guest::Create();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  const size_t len = 64 * kPage;
  Mapping m(len);
  uint64_t expect = 0;
  for (size_t i = 0; i < len / 8; ++i) {
    const uint64_t v = i * 0x9E3779B97F4A7C15ull;
    std::memcpy(m.data() + i * 8, &v, 8);
    expect += v;
  }
  Result<GuestSlot> s = (*g)->AddMemory(m.addr(), len);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  Result<uint64_t> sum = (*g)->Sum(s->guest_phys, len);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, expect);

  std::vector<uint64_t> addrs;
  for (size_t p = 0; p < len / kPage; p += 3) addrs.push_back(s->guest_phys + p * kPage + 16);
  ASSERT_TRUE((*g)->WriteList(addrs, 0xABCDEF).ok());
  for (size_t p = 0; p < len / kPage; ++p) {
    uint64_t v;
    std::memcpy(&v, m.page(p) + 16, 8);
    EXPECT_EQ(v == 0xABCDEF, p % 3 == 0) << "page " << p;
  }
  std::vector<Guest::Store> stores;
  for (size_t p = 1; p < len / kPage; p += 5) stores.push_back({s->guest_phys + p * kPage + 24, p});
  ASSERT_TRUE((*g)->WritePairs(stores).ok());
  for (size_t p = 1; p < len / kPage; p += 5) {
    uint64_t v;
    std::memcpy(&v, m.page(p) + 24, 8);
    EXPECT_EQ(v, p);
  }
  ASSERT_TRUE((*g)->Touch(s->guest_phys, len, kPage, /*write=*/true, 5).ok());
  for (size_t p = 0; p < len / kPage; ++p) {
    uint64_t v;
    std::memcpy(&v, m.page(p), 8);
    EXPECT_EQ(v, 5u);
  }
}

TEST(GuestTest, DirtyLogReportsExactlyTheGuestsWrites) {
  PAGEWISE_REQUIRE_KVM();
  GuestOptions o;
  o.manual_dirty_protect = true;
  Result<std::unique_ptr<Guest>> g = Guest::Create(o);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  const size_t pages = 512;
  Mapping m(pages * kPage);
  std::memset(m.data(), 1, pages * kPage);  // populated: only writes get logged
  Result<GuestSlot> s = (*g)->AddMemory(m.addr(), pages * kPage, /*log_dirty=*/true);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  std::vector<uint64_t> bitmap(pages / 64);
  // Initially everything reads dirty with manual protection off... clear it.
  ASSERT_TRUE((*g)->vm().GetDirtyLog(s->slot, bitmap.data()).ok());
  std::fill(bitmap.begin(), bitmap.end(), ~0ull);
  ASSERT_TRUE((*g)->vm().ClearDirtyLog(s->slot, 0, pages, bitmap.data()).ok());
  for (int round = 0; round < 3; ++round) {
    std::vector<uint64_t> addrs;
    std::vector<bool> want(pages, false);
    for (size_t p = round; p < pages; p += 7 + round) {
      addrs.push_back(s->guest_phys + p * kPage + 8 * round);
      want[p] = true;
    }
    ASSERT_TRUE((*g)->WriteList(addrs, round + 100).ok());
    ASSERT_TRUE((*g)->vm().GetDirtyLog(s->slot, bitmap.data()).ok());
    for (size_t p = 0; p < pages; ++p) {
      EXPECT_EQ(((bitmap[p / 64] >> (p % 64)) & 1) != 0, want[p])
          << "round " << round << " page " << p;
    }
    ASSERT_TRUE((*g)->vm().ClearDirtyLog(s->slot, 0, pages, bitmap.data()).ok());
  }
}

TEST(GuestTest, UserModeOnlyUserfaultfdFailsWithAClearError) {
  PAGEWISE_REQUIRE_KVM();
  Result<std::unique_ptr<Guest>> g = Guest::Create();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Mapping m(16 * kPage);
  sys::Userfaultfd::Options uo;
  uo.user_mode_only = true;
  Result<sys::Userfaultfd> uffd = sys::Userfaultfd::Open(uo);
  ASSERT_TRUE(uffd.ok()) << uffd.status().ToString();
  ASSERT_TRUE(uffd->Register(m.addr(), m.size(), UFFDIO_REGISTER_MODE_MISSING).ok());
  Result<GuestSlot> s = (*g)->AddMemory(m.addr(), m.size());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  Result<uint64_t> r = (*g)->Sum(s->guest_phys, m.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("UFFD_USER_MODE_ONLY"), std::string::npos)
      << r.status().ToString();
}

TEST(GuestTest, AccessOutsideEverySlotIsAnErrorNotAHang) {
  PAGEWISE_REQUIRE_KVM();
  Result<std::unique_ptr<Guest>> g = Guest::Create();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<uint64_t> r = (*g)->Sum(40ULL << 30, 64);  // mapped by the page table, no slot
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("mmio"), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace pagewise::kvm
