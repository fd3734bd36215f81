// Kernel-facing tests of sys::Userfaultfd: each test exercises one ioctl on
// the real kernel and checks the kernel's answer is reported faithfully.
#include "sys/userfaultfd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "pagewise/probe.h"
#include "sys/probe_env.h"
#include "sys/uapi.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::sys {
namespace {

using ::pagewise::testing::FaultEnv;
using ::pagewise::testing::Mapping;
using ::pagewise::testing::MemKind;
using ::pagewise::testing::Op;

const size_t kPage = PageSize();

Userfaultfd OpenOrDie(uint64_t required, uint64_t optional = 0, Env* env = nullptr) {
  Userfaultfd::Options o;
  o.required_features = required;
  o.optional_features = optional;
  o.env = env;
  Result<Userfaultfd> u = Userfaultfd::Open(o);
  EXPECT_TRUE(u.ok()) << u.status().ToString();
  return u.ok() ? std::move(u).value() : Userfaultfd();
}

// Every feature bit uapi.h defines, asked of the kernel one at a time:
// what the probe found is granted when required (so the number in uapi.h
// is the kernel's), and what it did not find is refused as kNotSupported,
// never an I/O error. On this machine's 6.18 the probe finds all 17.
TEST(UffdTest, NegotiatesEveryFeatureTheProbeFoundAndRefusesTheRest) {
  const KernelFeatures& f = Features();
  ASSERT_TRUE(f.uffd_available) << f.uffd_reason;
  size_t granted = 0;
  for (int b = 0; b < uffd_feature::kCount; ++b) {
    const uint64_t bit = 1ULL << b;
    Userfaultfd::Options o;
    o.required_features = bit;
    Result<Userfaultfd> u = Userfaultfd::Open(o);
    if (f.HasUffd(bit)) {
      ASSERT_TRUE(u.ok()) << "feature bit " << b << ": " << u.status().ToString();
      EXPECT_EQ(u->features() & bit, bit) << b;
      granted++;
    } else {
      ASSERT_FALSE(u.ok()) << "feature bit " << b << " granted, yet the probe lacks it";
      EXPECT_EQ(u.status().code(), Code::kNotSupported) << u.status().ToString();
    }
  }
  EXPECT_GT(granted, 0u);
}

TEST(UffdTest, UnknownFeatureBitIsNotSupportedNotIoError) {
  Userfaultfd::Options o;
  o.required_features = 1ULL << 62;  // no kernel defines this
  Result<Userfaultfd> u = Userfaultfd::Open(o);
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.status().code(), Code::kNotSupported) << u.status().ToString();
  EXPECT_NE(u.status().message().find("BIT62"), std::string::npos) << u.status().ToString();
}

TEST(UffdTest, CopyFillsMissingPageThenEexist) {
  Mapping m(4 * kPage);
  Userfaultfd u = OpenOrDie(0);
  ASSERT_TRUE(u.Register(m.addr(), m.size(), UFFDIO_REGISTER_MODE_MISSING).ok());
  std::vector<char> src(2 * kPage);
  ::pagewise::testing::FillPage(src.data(), 7, 0);
  ::pagewise::testing::FillPage(src.data() + kPage, 7, 1);
  FillResult r = u.Copy(m.addr(), src.data(), 2 * kPage);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.bytes, 2 * kPage);
  EXPECT_EQ(memcmp(m.data(), src.data(), 2 * kPage), 0);
  // Copying onto a present page: EEXIST, nothing done, nothing overwritten.
  std::vector<char> other(kPage, 'x');
  r = u.Copy(m.addr(), other.data(), kPage);
  EXPECT_EQ(r.error, EEXIST);
  EXPECT_EQ(r.bytes, 0u);
  EXPECT_TRUE(::pagewise::testing::PageMatches(m.data(), 7, 0));
}

TEST(UffdTest, ZeropageFillsZeros) {
  Mapping m(2 * kPage);
  Userfaultfd u = OpenOrDie(0);
  ASSERT_TRUE(u.Register(m.addr(), m.size(), UFFDIO_REGISTER_MODE_MISSING).ok());
  FillResult r = u.Zeropage(m.addr(), 2 * kPage);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.bytes, 2 * kPage);
  for (size_t i = 0; i < 2 * kPage; ++i) ASSERT_EQ(m.data()[i], 0);
  EXPECT_EQ(u.Zeropage(m.addr(), kPage).error, EEXIST);
}

TEST(UffdTest, MoveTransfersPagesWithoutCopy) {
  ASSERT_TRUE(Features().HasUffd(uffd_feature::kMove));
  Mapping src(2 * kPage), dst(2 * kPage);
  ::pagewise::testing::FillPage(src.data(), 3, 0);
  ::pagewise::testing::FillPage(src.page(1), 3, 1);
  Userfaultfd u = OpenOrDie(UFFD_FEATURE_MOVE);
  ASSERT_TRUE(u.Register(dst.addr(), dst.size(), UFFDIO_REGISTER_MODE_MISSING).ok());
  FillResult r = u.Move(dst.addr(), src.addr(), 2 * kPage);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.bytes, 2 * kPage);
  EXPECT_TRUE(::pagewise::testing::PageMatches(dst.data(), 3, 0));
  EXPECT_TRUE(::pagewise::testing::PageMatches(dst.page(1), 3, 1));
  // The source is now a hole: it reads back as zeros.
  EXPECT_EQ(src.data()[0], 0);
}

TEST(UffdTest, PoisonReportsBytesUpdated) {
  ASSERT_TRUE(Features().HasUffd(uffd_feature::kPoison));
  Mapping m(2 * kPage);
  Userfaultfd u = OpenOrDie(UFFD_FEATURE_POISON);
  ASSERT_TRUE(u.Register(m.addr(), m.size(), UFFDIO_REGISTER_MODE_MISSING).ok());
  FillResult r = u.Poison(m.addr(), kPage);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.bytes, kPage);
  // A second poison of the same page: already installed.
  EXPECT_EQ(u.Poison(m.addr(), kPage).error, EEXIST);
}

TEST(UffdTest, ContinueMapsShmemPageCachePage) {
  ASSERT_TRUE(Features().HasUffd(uffd_feature::kMinorShmem));
  Mapping shared(kPage, MemKind::kMemfdShared);
  ::pagewise::testing::FillPage(shared.data(), 11, 0);  // page now in the page cache
  // A second view of the same memfd, registered in MINOR mode.
  void* view = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, shared.memfd(), 0);
  ASSERT_NE(view, MAP_FAILED);
  Userfaultfd u = OpenOrDie(UFFD_FEATURE_MINOR_SHMEM);
  ASSERT_TRUE(u.Register(reinterpret_cast<uint64_t>(view), kPage, UFFDIO_REGISTER_MODE_MINOR).ok());
  FillResult r = u.Continue(reinterpret_cast<uint64_t>(view), kPage);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.bytes, kPage);
  EXPECT_TRUE(::pagewise::testing::PageMatches(static_cast<char*>(view), 11, 0));
  munmap(view, kPage);
}

TEST(UffdTest, WriteProtectFaultIsDeliveredAndResolved) {
  Mapping m(kPage);
  m.data()[0] = 1;
  Userfaultfd u = OpenOrDie(UFFD_FEATURE_PAGEFAULT_FLAG_WP);
  ASSERT_TRUE(u.Register(m.addr(), kPage, UFFDIO_REGISTER_MODE_WP).ok());
  ASSERT_TRUE(u.WriteProtect(m.addr(), kPage, true).ok());
  // Atomic accesses: the writer's store is stalled by the kernel, not by a
  // C++ synchronisation primitive, so the language needs them to be atomic.
  std::atomic_ref<char> byte(m.data()[0]);
  std::thread writer([&] { byte.store(2, std::memory_order_relaxed); });
  Result<bool> ready = u.WaitReadable(-1, 10000);  // failure detector only
  ASSERT_TRUE(ready.ok() && *ready) << "no write-protect fault within 10 s";
  UffdEvent ev[4];
  Result<size_t> n = u.ReadEvents(ev, 4);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(ev[0].kind, UffdEvent::Kind::kPagefault);
  EXPECT_EQ(ev[0].address & ~(kPage - 1), m.addr());
  EXPECT_TRUE(ev[0].flags & UFFD_PAGEFAULT_FLAG_WP);
  EXPECT_EQ(byte.load(std::memory_order_relaxed), 1) << "the write must wait for the monitor";
  ASSERT_TRUE(u.WriteProtect(m.addr(), kPage, false).ok());  // wakes the writer
  writer.join();
  EXPECT_EQ(byte.load(std::memory_order_relaxed), 2);
}

TEST(UffdTest, InjectedPartialCopyWithEagainReportsProgress) {
  FaultEnv env;
  Mapping m(4 * kPage);
  Userfaultfd u = OpenOrDie(0, 0, &env);
  ASSERT_TRUE(u.Register(m.addr(), m.size(), UFFDIO_REGISTER_MODE_MISSING).ok());
  std::vector<char> src(4 * kPage, 'a');
  env.Inject(Op::kUffdCopy, {.error = EAGAIN, .partial_bytes = kPage});
  FillResult r = u.Copy(m.addr(), src.data(), 4 * kPage);
  EXPECT_EQ(r.error, EAGAIN);
  EXPECT_EQ(r.bytes, kPage);
  EXPECT_EQ(m.data()[0], 'a');  // the partial part really happened
  // Retrying only the remainder completes the range.
  r = u.Copy(m.addr() + kPage, src.data() + kPage, 3 * kPage);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.bytes, 3 * kPage);
  EXPECT_EQ(FillStatus({0, EAGAIN}, "UFFDIO_COPY", m.addr(), kPage).code(), Code::kRetry);
}

TEST(UffdTest, DevNodeFallbackCreatesWorkingFd) {
  // /dev/userfaultfd is the fallback when userfaultfd(2) is refused; prove the
  // fd it yields negotiates and serves a fault-free fill like the syscall's.
  Result<int> fd = CreateUserfaultfdViaDevice(O_CLOEXEC | O_NONBLOCK);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  uint64_t granted = 0;
  ASSERT_TRUE(Env::Default()->UffdApi(*fd, 0, &granted, nullptr).ok());
  EXPECT_NE(granted, 0u);
  Userfaultfd u = Userfaultfd::Adopt(*fd, granted);
  Mapping m(kPage);
  ASSERT_TRUE(u.Register(m.addr(), kPage, UFFDIO_REGISTER_MODE_MISSING).ok());
  EXPECT_TRUE(u.Zeropage(m.addr(), kPage).ok());
}

TEST(UffdTest, CreateFailureIsReportedWithFix) {
  FaultEnv env;
  env.Inject(Op::kUffdCreate, {.error = EPERM, .count = -1});
  Userfaultfd::Options o;
  o.env = &env;
  Result<Userfaultfd> u = Userfaultfd::Open(o);
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.status().code(), Code::kPermissionDenied);
  KernelFeatures f = ProbeKernel(&env);  // the probe records why, never fails
  EXPECT_FALSE(f.uffd_available);
  EXPECT_FALSE(f.uffd_reason.empty());
  Status s = RequireUffd(f, uffd_feature::kWpAsync, "tracking");
  EXPECT_EQ(s.code(), Code::kNotSupported);
  EXPECT_NE(s.message().find("tracking needs userfaultfd"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace pagewise::sys
