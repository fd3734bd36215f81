// Drops the kernel hides from PAGEMAP_SCAN are never lost, with and without
// libpagewise-interpose.
//
// madvise(MADV_REMOVE) on shmem, and MADV_DONTNEED on private hugetlbfs or a
// private memfd mapping, change a page's content while its pte keeps a
// uffd-wp marker ("not written"); a later read fault keeps the marker too.
// One program, built twice (CMakeLists.txt, block "kinds: drops_test"):
//   drops_interposed_off  libpagewise alone (a library user's program)
//   drops_interposed_on   + libpagewise-interpose
// PAGEWISE_EXPECT_INTERPOSERS=1|0 tells which. Both: uffd-wp-async reports
// every such drop, raw madvise system calls included (it sees them through
// UFFD_EVENT_REMOVE). uffd-wp (synchronous) reports them through the
// interposer when it is there, and refuses shared/file-backed memory with a
// clear error naming uffd-wp-async when it is not.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/tracker.h"
#include "testing/hugepages.h"

namespace pagewise {
namespace {

size_t Pg() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

bool ExpectInterposers() {
  const char* e = std::getenv("PAGEWISE_EXPECT_INTERPOSERS");
  if (e == nullptr) ADD_FAILURE() << "PAGEWISE_EXPECT_INTERPOSERS is not set (run through ctest)";
  return e != nullptr && std::strcmp(e, "1") == 0;
}

// A memfd of `len` bytes mapped once, shared or private, filled with `fill`
// (through the mapping when shared, through the file when private).
struct Memfd {
  Memfd(size_t len, bool shared, int fill) : len(len) {
    fd = memfd_create("pagewise-kinds-drops", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(len)) != 0) return;
    std::vector<char> buf(len, static_cast<char>(fill));
    if (pwrite(fd, buf.data(), len, 0) != static_cast<ssize_t>(len)) return;
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) data = static_cast<char*>(p);
  }
  ~Memfd() {
    if (data != nullptr) munmap(data, len);
    if (fd >= 0) close(fd);
  }
  char* page(size_t i) const { return data + i * Pg(); }
  size_t len;
  int fd = -1;
  char* data = nullptr;
};

std::unique_ptr<Tracker> MakeTracker(TrackBackend b) {
  Result<std::unique_ptr<Tracker>> t = Tracker::Create({.backend = b});
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(t).value() : nullptr;
}

// Pages (of `page_size`) of [base, base+len) that one collect reported.
std::set<size_t> Collect(Tracker* t, const char* base, size_t page_size) {
  std::vector<PageRange> written;
  Status s = t->Collect(&written);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::set<size_t> pages;
  const uint64_t b = reinterpret_cast<uint64_t>(base);
  for (const PageRange& r : written) {
    for (uint64_t a = r.start; a < r.end; a += page_size) pages.insert((a - b) / page_size);
  }
  return pages;
}

int RawMadvise(void* addr, size_t len, int advice) {
  return static_cast<int>(syscall(SYS_madvise, addr, len, advice));
}

TEST(DropsAsync, ShmemRemoveIsReportedEvenAfterTheReadThatRefaultsIt) {
  (void)ExpectInterposers();
  Memfd m(16 * Pg(), /*shared=*/true, 5);
  ASSERT_NE(m.data, nullptr);
  for (size_t i = 0; i < 16; ++i) m.page(i)[0] = 5;  // present in this mapping
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWpAsync);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->Track(m.data, m.len).ok());
  EXPECT_TRUE(Collect(t.get(), m.data, Pg()).empty());
  // libc's madvise (interposed in the _on build) and the raw system call
  // (never interposed): both drop clean, protected pages.
  ASSERT_EQ(madvise(m.page(3), 2 * Pg(), MADV_REMOVE), 0);
  ASSERT_EQ(RawMadvise(m.page(9), Pg(), MADV_REMOVE), 0);
  // Reading faults a fresh zero page in, and it keeps the uffd-wp marker's
  // protection: afterwards nothing in the page tables tells it changed.
  EXPECT_EQ(m.page(3)[0], 0);
  EXPECT_EQ(m.page(9)[0], 0);
  EXPECT_EQ(Collect(t.get(), m.data, Pg()), (std::set<size_t>{3, 4, 9}));
  // Reported once; still tracked afterwards.
  EXPECT_TRUE(Collect(t.get(), m.data, Pg()).empty());
  m.page(4)[1] = 1;
  EXPECT_EQ(Collect(t.get(), m.data, Pg()), (std::set<size_t>{4}));
}

TEST(DropsAsync, SharedAnonymousRemoveFromAnotherThread) {
  (void)ExpectInterposers();
  const size_t len = 8 * Pg();
  char* p = static_cast<char*>(
      mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  std::memset(p, 7, len);
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWpAsync);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->Track(p, len).ok());
  EXPECT_TRUE(Collect(t.get(), p, Pg()).empty());
  // The collect after the join must see it: the drop happened before.
  std::thread([p] { EXPECT_EQ(RawMadvise(p + 6 * Pg(), Pg(), MADV_REMOVE), 0); }).join();
  EXPECT_EQ(p[6 * Pg()], 0);
  EXPECT_EQ(Collect(t.get(), p, Pg()), (std::set<size_t>{6}));
  t.reset();
  munmap(p, len);
}

TEST(DropsAsync, PrivateMemfdDontneedRevertsToTheFileAndIsReported) {
  (void)ExpectInterposers();
  Memfd m(8 * Pg(), /*shared=*/false, 2);
  ASSERT_NE(m.data, nullptr);
  for (size_t i = 0; i < 8; ++i) m.page(i)[0] = 9;  // private copies
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWpAsync);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->Track(m.data, m.len).ok());
  EXPECT_TRUE(Collect(t.get(), m.data, Pg()).empty());
  ASSERT_EQ(RawMadvise(m.page(2), Pg(), MADV_DONTNEED), 0);
  EXPECT_EQ(m.page(2)[0], 2) << "the private copy is gone: the page reads the file again";
  EXPECT_EQ(Collect(t.get(), m.data, Pg()), (std::set<size_t>{2}));
}

TEST(DropsAsync, PrivateHugetlbfsDontneedIsReportedPerHugePage) {
  (void)ExpectInterposers();
  constexpr size_t kHuge = 2 << 20;
  testing::HugePagePool pool(kHuge, 4);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  char* p = static_cast<char*>(mmap(nullptr, 4 * kHuge, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  for (size_t i = 0; i < 4; ++i) p[i * kHuge] = 3;
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWpAsync);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->Track(p, 4 * kHuge).ok());
  EXPECT_TRUE(Collect(t.get(), p, kHuge).empty());
  ASSERT_EQ(RawMadvise(p + kHuge, kHuge, MADV_DONTNEED), 0);
  EXPECT_EQ(p[kHuge], 0);
  EXPECT_EQ(Collect(t.get(), p, kHuge), (std::set<size_t>{1}));
  t.reset();
  munmap(p, 4 * kHuge);
}

TEST(DropsAsync, UntrackedAndAnonymousDropsAreNotInvented) {
  (void)ExpectInterposers();
  Memfd m(8 * Pg(), /*shared=*/true, 1);
  ASSERT_NE(m.data, nullptr);
  for (size_t i = 0; i < 8; ++i) m.page(i)[0] = 1;
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWpAsync);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->Track(m.page(0), 4 * Pg()).ok());
  EXPECT_TRUE(Collect(t.get(), m.data, Pg()).empty());
  ASSERT_EQ(madvise(m.page(6), Pg(), MADV_REMOVE), 0);  // not tracked
  EXPECT_TRUE(Collect(t.get(), m.data, Pg()).empty());
  ASSERT_TRUE(t->Untrack(m.page(0), 4 * Pg()).ok());
  ASSERT_EQ(madvise(m.page(1), Pg(), MADV_REMOVE), 0);  // no longer tracked
  EXPECT_TRUE(Collect(t.get(), m.data, Pg()).empty());
}

TEST(DropsSync, ReportedWithTheInterposerRefusedClearlyWithout) {
  const bool on = ExpectInterposers();
  Memfd m(8 * Pg(), /*shared=*/true, 4);
  ASSERT_NE(m.data, nullptr);
  for (size_t i = 0; i < 8; ++i) m.page(i)[0] = 4;
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWp);
  ASSERT_NE(t, nullptr);
  Status s = t->Track(m.data, m.len);
  if (!on) {
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Code::kNotSupported);
    EXPECT_NE(s.message().find("uffd-wp-async"), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find("libpagewise-interpose"), std::string::npos) << s.ToString();
    EXPECT_TRUE(t->tracked().empty()) << "nothing left registered";
    // Anonymous private memory needs no help: still tracked.
    char* a = static_cast<char*>(
        mmap(nullptr, 4 * Pg(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(a, MAP_FAILED);
    ASSERT_TRUE(t->Track(a, 4 * Pg()).ok());
    a[Pg()] = 1;
    EXPECT_EQ(Collect(t.get(), a, Pg()), (std::set<size_t>{1}));
    ASSERT_TRUE(t->Untrack(a, 4 * Pg()).ok());
    munmap(a, 4 * Pg());
    return;
  }
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(Collect(t.get(), m.data, Pg()).empty());
  ASSERT_EQ(madvise(m.page(5), Pg(), MADV_REMOVE), 0);
  EXPECT_EQ(m.page(5)[0], 0);
  EXPECT_EQ(Collect(t.get(), m.data, Pg()), (std::set<size_t>{5}));
}

}  // namespace
}  // namespace pagewise
