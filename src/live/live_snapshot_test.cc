// Live snapshot tests: the image equals memory at the snapshot instant while
// writer threads keep mutating it (anonymous, memfd, THP, several regions);
// the fault path saves a page before its first write; the fault queue is
// bounded; progress and cancel behave.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "live/live_test_harness.h"
#include "pagewise/image.h"
#include "pagewise/live.h"
#include "sys/pagemap.h"
#include "testing/test_util.h"

namespace pagewise::live {
namespace {

using pagewise::testing::FillPage;
using pagewise::testing::Mapping;
using pagewise::testing::MemKind;
using pagewise::testing::TempDir;
using testing::CompareImage;
using testing::Latch;
using testing::WriterPool;

constexpr size_t kMiB = 1 << 20;
const size_t kPage = static_cast<size_t>(getpagesize());

Region TestRegion(const Mapping& m, MemKind kind, std::string name) {
  Region r;
  r.address = m.addr();
  r.length = m.size();
  r.page_size = static_cast<uint32_t>(kPage);
  r.prot = PROT_READ | PROT_WRITE;
  r.kind = kind == MemKind::kMemfdShared ? RegionKind::kShared : RegionKind::kAnonymous;
  r.name = std::move(name);
  return r;
}

// Fills 3 of every 4 pages (the rest stay never-touched holes).
void Populate(const Mapping& m, uint64_t seed) {
  for (size_t i = 0; i < m.size() / kPage; ++i) {
    if (i % 4 != 3) FillPage(m.page(i), seed, i);
  }
}

// Pages of [addr, addr+len) whose pagemap entry has the uffd-wp bit (57).
size_t WriteProtectedPages(uint64_t addr, size_t len) {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return SIZE_MAX;
  std::vector<uint64_t> e(len / kPage);
  ssize_t n = pread(fd, e.data(), e.size() * 8, static_cast<off_t>(addr / kPage * 8));
  close(fd);
  if (n != static_cast<ssize_t>(e.size() * 8)) return SIZE_MAX;
  size_t wp = 0;
  for (uint64_t v : e) wp += (v >> 57) & 1;
  return wp;
}

size_t HugePages(uint64_t addr, size_t len) {
  Result<sys::PagemapScanner> sc = sys::PagemapScanner::Open();
  if (!sc.ok()) return 0;
  PagemapScanArgs a;
  a.start = addr;
  a.end = addr + len;
  a.category_mask = sys::page_is::kHuge;
  a.return_mask = sys::page_is::kHuge;
  std::vector<PageRegion> out;
  if (!sc->ScanAll(a, &out).ok()) return 0;
  size_t n = 0;
  for (const PageRegion& r : out) n += (r.end - r.start) / kPage;
  return n;
}

constexpr int kIterations = testing::kSanitized ? 4 : 10;
constexpr size_t kMaxExtraMiB = testing::kSanitized ? 0 : 16;
constexpr size_t kMultiMiB = testing::kSanitized ? 8 : 16;

class LiveConsistency : public ::testing::TestWithParam<MemKind> {};

// The core property: writers never stop; at the instant the snapshot starts
// they are held just long enough to take a reference copy; the committed
// image equals that copy byte for byte.
TEST_P(LiveConsistency, ImageEqualsMemoryAtStartWhileWritersRun) {
  const MemKind kind = GetParam();
  TempDir dir;
  uint64_t by_fault = 0, faults = 0;
  const int iterations = kIterations;
  for (int it = 0; it < iterations; ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    const size_t len = (16 + kMaxExtraMiB * static_cast<size_t>(it % 3) / 2) * kMiB;
    Mapping m(len, kind);
    Populate(m, static_cast<uint64_t>(it));
    if (kind == MemKind::kThp && it == 0) {
      ASSERT_GT(HugePages(m.addr(), len), 0u) << "THP test without transparent huge pages";
    }
    WriterPool writers(m.data(), len, 2, static_cast<uint64_t>(it));
    writers.Start();
    writers.WaitForBatches(16);  // writers are really running before T

    const std::string path = dir.File("live-" + std::to_string(it) + ".pwi");
    std::vector<char> ref(len);
    writers.Pause();
    // One page per data chunk: pages saved on faults land in the image in
    // fault order, and reading such an image back in address order
    // decompresses one whole chunk per scattered page.
    LiveSnapshotOptions o;
    o.image.chunk_bytes = 4096;
    Result<std::unique_ptr<LiveSnapshot>> snap =
        LiveSnapshot::Start(path, {TestRegion(m, kind, "r")}, o);
    std::memcpy(ref.data(), m.data(), len);
    writers.Resume();
    ASSERT_TRUE(snap.ok()) << snap.status().ToString();
    Status s = (*snap)->Wait();
    writers.WaitForBatches(writers.writes() / 32 + 8);  // and keep running after it
    writers.Stop();
    ASSERT_TRUE(s.ok()) << s.ToString();

    LiveSnapshotStats st = (*snap)->stats();
    EXPECT_EQ(st.pages_total, len / kPage);
    EXPECT_EQ(st.pages_background + st.pages_by_fault, st.pages_total);
    by_fault += st.pages_by_fault;
    faults += st.faults_handled;
    EXPECT_EQ(CompareImage(path, 0, ref.data(), len), "");
    EXPECT_EQ(WriteProtectedPages(m.addr(), len), 0u) << "protection left after the snapshot";
    std::filesystem::remove(path);
  }
  // The writers must really have raced the saver: some pages were saved by
  // the fault path before a write.
  EXPECT_GT(by_fault, 0u);
  EXPECT_GT(faults, 0u);
}

INSTANTIATE_TEST_SUITE_P(Kinds, LiveConsistency,
                         ::testing::Values(MemKind::kAnonPrivate, MemKind::kMemfdShared,
                                           MemKind::kThp),
                         [](const ::testing::TestParamInfo<MemKind>& i) {
                           switch (i.param) {
                             case MemKind::kAnonPrivate:
                               return std::string("Anon");
                             case MemKind::kMemfdShared:
                               return std::string("Memfd");
                             case MemKind::kThp:
                               return std::string("Thp");
                           }
                           return std::string("Unknown");
                         });

TEST(LiveSnapshot, SeveralRegionsOfEveryKindInOneImage) {
  TempDir dir;
  Mapping anon(kMultiMiB * kMiB, MemKind::kAnonPrivate);
  Mapping shm(kMultiMiB / 2 * kMiB, MemKind::kMemfdShared);
  Mapping thp(kMultiMiB * kMiB, MemKind::kThp);
  Populate(anon, 1);
  Populate(shm, 2);
  Populate(thp, 3);
  WriterPool w1(anon.data(), anon.size(), 1, 11), w2(shm.data(), shm.size(), 1, 12),
      w3(thp.data(), thp.size(), 1, 13);
  WriterPool* pools[] = {&w1, &w2, &w3};
  for (WriterPool* w : pools) w->Start();
  for (WriterPool* w : pools) w->WaitForBatches(8);
  // Region order in the image differs from address order on purpose.
  std::vector<Region> regions = {TestRegion(thp, MemKind::kThp, "thp"),
                                 TestRegion(anon, MemKind::kAnonPrivate, "anon"),
                                 TestRegion(shm, MemKind::kMemfdShared, "shm")};
  const Mapping* maps[] = {&thp, &anon, &shm};
  std::vector<std::vector<char>> ref(3);
  const std::string path = dir.File("multi.pwi");
  for (WriterPool* w : pools) w->Pause();
  LiveSnapshotOptions o;
  o.image.chunk_bytes = 4096;
  Result<std::unique_ptr<LiveSnapshot>> snap = LiveSnapshot::Start(path, regions, o);
  for (int i = 0; i < 3; ++i) ref[i].assign(maps[i]->data(), maps[i]->data() + maps[i]->size());
  for (WriterPool* w : pools) w->Resume();
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  Status s = (*snap)->Wait();
  for (WriterPool* w : pools) w->Stop();
  ASSERT_TRUE(s.ok()) << s.ToString();
  Result<std::unique_ptr<Image>> img = Image::Open(path);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  ASSERT_EQ((*img)->regions().size(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*img)->regions()[i].address, regions[i].address);
    EXPECT_EQ((*img)->regions()[i].name, regions[i].name);
    EXPECT_EQ(CompareImage(path, i, ref[i].data(), ref[i].size()), "") << regions[i].name;
    EXPECT_EQ(WriteProtectedPages(maps[i]->addr(), maps[i]->size()), 0u);
  }
}

// While the saver thread is held (in its first progress callback), writes
// to not yet saved pages fault, and the fault path copies each page into
// the spill area before letting the write happen: the image still holds the
// old content, and the writes complete although the saver does nothing
// meanwhile (the spill area has room for all of them).
TEST(LiveSnapshot, FaultPathSavesEachPageBeforeItsFirstWrite) {
  TempDir dir;
  const size_t len = 8 * kMiB, pages = len / kPage;
  const size_t spill = pages / 16;  // the cap on fault_queue_pages
  Mapping m(len, MemKind::kAnonPrivate);
  Populate(m, 7);
  std::vector<char> ref(m.data(), m.data() + len);
  Latch saver_held, release;
  std::atomic<int> calls{0};
  LiveSnapshotOptions o;
  o.chunk_pages = 64;
  o.fault_around_pages = 1;  // one fault per page
  o.progress_every_pages = 1;
  o.progress = [&](const LiveProgress& p) {
    if (calls.fetch_add(1) == 0) {
      EXPECT_EQ(p.pages_saved, 64u);
      EXPECT_EQ(p.pages_total, pages);
      saver_held.Open();
      release.Wait();
    }
  };
  const std::string path = dir.File("fault.pwi");
  Result<std::unique_ptr<LiveSnapshot>> snap =
      LiveSnapshot::Start(path, {TestRegion(m, MemKind::kAnonPrivate, "m")}, o);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  saver_held.Wait();
  for (size_t i = 64; i < 64 + spill; ++i) std::memset(m.page(i), 0xA5, 64);
  LiveSnapshotStats held = (*snap)->stats();
  EXPECT_EQ(held.pages_by_fault, spill);
  EXPECT_EQ(held.fault_queue_full, 0u);
  release.Open();
  ASSERT_TRUE((*snap)->Wait().ok());
  LiveSnapshotStats st = (*snap)->stats();
  EXPECT_EQ(st.pages_background, pages - spill);
  EXPECT_EQ(st.pages_by_fault, spill);
  EXPECT_GE(st.faults_handled, spill);
  EXPECT_GT(st.fault_service_max_ns, 0u);
  EXPECT_LE(st.fault_service_p50_ns, st.fault_service_p99_ns);
  EXPECT_LE(st.fault_service_p99_ns, st.fault_service_max_ns);
  EXPECT_EQ(CompareImage(path, 0, ref.data(), len), "");
  for (size_t i = 64; i < 64 + spill; ++i)
    ASSERT_EQ(static_cast<unsigned char>(m.page(i)[0]), 0xA5);
}

// With a spill area of 8 pages and the saver held, the fault path holds at
// most 8 page copies and never writes the image itself: the 9th first
// write waits (counted in fault_queue_full) until the saver runs again and
// moves the spilled pages on; then every write completes, the image is
// exact and the peak extra memory stayed within the bound.
TEST(LiveSnapshot, FullSpillAreaWaitsForTheSaver) {
  TempDir dir;
  const size_t len = 4 * kMiB, pages = len / kPage;
  Mapping m(len, MemKind::kAnonPrivate);
  Populate(m, 9);
  std::vector<char> ref(m.data(), m.data() + len);
  Latch saver_held, release;
  std::atomic<int> calls{0};
  LiveSnapshotOptions o;
  o.chunk_pages = 64;
  o.fault_queue_pages = 8;
  o.fault_around_pages = 1;
  o.progress_every_pages = 1;
  o.progress = [&](const LiveProgress&) {
    if (calls.fetch_add(1) == 0) {
      saver_held.Open();
      release.Wait();
    }
  };
  const std::string path = dir.File("bounded.pwi");
  Result<std::unique_ptr<LiveSnapshot>> snap =
      LiveSnapshot::Start(path, {TestRegion(m, MemKind::kAnonPrivate, "m")}, o);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  saver_held.Wait();
  std::atomic<size_t> done{0};
  std::thread writer([&] {
    for (size_t i = pages; i-- > 0; done++) {
      m.page(i)[1] = 1;  // from the end: pages the saver has not reached
    }
  });
  // The writer gets 8 pages saved, then its 9th first write waits for room
  // (the fault thread blocks in the spill area, not in image I/O).
  while ((*snap)->stats().fault_queue_full == 0) std::this_thread::yield();
  EXPECT_EQ((*snap)->stats().pages_by_fault, 8u);
  EXPECT_EQ(done.load(), 8u);
  release.Open();
  writer.join();
  ASSERT_TRUE((*snap)->Wait().ok());
  LiveSnapshotStats st = (*snap)->stats();
  EXPECT_GE(st.fault_queue_full, 1u);
  const uint64_t bound = 8 * kPage + 2 * 8 * ((pages + 63) / 64) + 8;
  EXPECT_LE(st.peak_extra_bytes, bound);
  EXPECT_EQ(CompareImage(path, 0, ref.data(), len), "");
}

// Fault-around: one write fault saves and unprotects its whole aligned
// group of 64 pages; the rest stays protected until the saver gets there.
TEST(LiveSnapshot, FaultAroundSavesTheGroupOfTheFaultingPage) {
  TempDir dir;
  const size_t len = 4 * kMiB, pages = len / kPage;
  Mapping m(len, MemKind::kAnonPrivate);
  Populate(m, 10);
  std::vector<char> ref(m.data(), m.data() + len);
  Latch saver_held, release;
  std::atomic<int> calls{0};
  LiveSnapshotOptions o;
  o.chunk_pages = 64;
  o.fault_around_pages = 64;
  o.progress_every_pages = 1;
  o.progress = [&](const LiveProgress&) {
    if (calls.fetch_add(1) == 0) {
      saver_held.Open();
      release.Wait();
    }
  };
  const std::string path = dir.File("around.pwi");
  Result<std::unique_ptr<LiveSnapshot>> snap =
      LiveSnapshot::Start(path, {TestRegion(m, MemKind::kAnonPrivate, "m")}, o);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  saver_held.Wait();
  const size_t group = 9;  // pages [576, 640)
  m.page(group * 64 + 17)[0] ^= 1;
  EXPECT_EQ(WriteProtectedPages(m.addr() + group * 64 * kPage, 64 * kPage), 0u);
  EXPECT_EQ(WriteProtectedPages(m.addr() + (group + 1) * 64 * kPage, 64 * kPage), 64u);
  for (size_t i = 0; i < 64; ++i) m.page(group * 64 + i)[1] ^= 1;  // no more faults
  LiveSnapshotStats mid = (*snap)->stats();
  EXPECT_EQ(mid.pages_by_fault, 64u);
  EXPECT_EQ(mid.faults_handled, 1u);
  release.Open();
  ASSERT_TRUE((*snap)->Wait().ok());
  EXPECT_EQ((*snap)->stats().pages_by_fault, 64u);
  EXPECT_EQ((*snap)->stats().pages_background, pages - 64);
  EXPECT_EQ(CompareImage(path, 0, ref.data(), len), "");
}

TEST(LiveSnapshot, ProgressReachesTotalAndEndsWithDone) {
  TempDir dir;
  Mapping m(8 * kMiB, MemKind::kAnonPrivate);
  Populate(m, 4);
  std::vector<LiveProgress> seen;
  LiveSnapshotOptions o;
  o.progress_every_pages = 256;
  o.progress = [&](const LiveProgress& p) { seen.push_back(p); };
  Result<LiveSnapshotStats> st =
      TakeLiveSnapshot(dir.File("p.pwi"), {TestRegion(m, MemKind::kAnonPrivate, "m")}, o);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ASSERT_GE(seen.size(), 2u);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_LE(seen[i - 1].pages_saved, seen[i].pages_saved);
  EXPECT_TRUE(seen.back().done);
  EXPECT_EQ(seen.back().pages_saved, m.size() / kPage);
  EXPECT_EQ(seen.back().pages_total, m.size() / kPage);
  for (size_t i = 0; i + 1 < seen.size(); ++i) EXPECT_FALSE(seen[i].done);
  EXPECT_GT(st->total_ns, 0u);
  EXPECT_GT(st->protect_ns, 0u);
}

// The saver runs at the requested nice value (the progress callback runs on
// the saver thread), and the caller's thread keeps its own.
TEST(LiveSnapshot, SaverThreadRunsAtItsNiceValue) {
  TempDir dir;
  Mapping m(2 * kMiB, MemKind::kAnonPrivate);
  Populate(m, 5);
  errno = 0;
  const int caller_before = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
  ASSERT_EQ(errno, 0);
  for (int nice : {0, 7}) {
    LiveSnapshotOptions o;
    o.saver_nice = nice;
    o.progress_every_pages = 64;
    std::vector<int> seen;
    o.progress = [&](const LiveProgress&) {
      errno = 0;
      const int v = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
      seen.push_back(errno == 0 ? v : -100);
    };
    Result<LiveSnapshotStats> st = TakeLiveSnapshot(dir.File("n" + std::to_string(nice) + ".pwi"),
                                                    {TestRegion(m, MemKind::kAnonPrivate, "m")}, o);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    ASSERT_FALSE(seen.empty());
    // Threads inherit the caller's value; the saver adds its increment.
    const int want = std::min(19, caller_before + nice);
    for (int v : seen) EXPECT_EQ(v, want) << "saver_nice " << nice;
  }
  errno = 0;
  EXPECT_EQ(getpriority(PRIO_PROCESS, static_cast<id_t>(gettid())), caller_before);
}

TEST(LiveSnapshot, CancelLiftsProtectionAndLeavesNoImage) {
  TempDir dir;
  Mapping m(8 * kMiB, MemKind::kMemfdShared);
  Populate(m, 5);
  Latch saver_held, release;
  std::atomic<int> calls{0};
  LiveSnapshotOptions o;
  o.progress_every_pages = 1;
  o.progress = [&](const LiveProgress&) {
    if (calls.fetch_add(1) == 0) {
      saver_held.Open();
      release.Wait();
    }
  };
  Result<std::unique_ptr<LiveSnapshot>> snap =
      LiveSnapshot::Start(dir.File("c.pwi"), {TestRegion(m, MemKind::kMemfdShared, "m")}, o);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  saver_held.Wait();
  EXPECT_GT(WriteProtectedPages(m.addr(), m.size()), 0u);
  (*snap)->Cancel();
  release.Open();
  Status s = (*snap)->Wait();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("cancelled"), std::string::npos) << s.message();
  EXPECT_EQ(WriteProtectedPages(m.addr(), m.size()), 0u);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  for (size_t i = 0; i < m.size() / kPage; ++i) m.page(i)[0] = 1;  // nothing blocks
  EXPECT_TRUE((*snap)->progress().done);
}

TEST(LiveSnapshot, RejectsBadArgumentsAndLeavesNothing) {
  TempDir dir;
  Mapping m(4 * kMiB, MemKind::kAnonPrivate);
  Region good = TestRegion(m, MemKind::kAnonPrivate, "m");
  auto start = [&](std::vector<Region> rs, LiveSnapshotOptions o = {}) {
    return LiveSnapshot::Start(dir.File("bad.pwi"), rs, o).status();
  };
  EXPECT_EQ(start({}).code(), Code::kInvalidArgument);
  Region unaligned = good;
  unaligned.address += 1;
  EXPECT_EQ(start({unaligned}).code(), Code::kInvalidArgument);
  Region half = good;
  half.length = kMiB;
  Region overlap = good;
  overlap.address += kMiB / 2;
  overlap.length = kMiB;
  EXPECT_EQ(start({half, overlap}).code(), Code::kInvalidArgument);
  Region file = good;
  file.kind = RegionKind::kFile;
  EXPECT_EQ(start({file}).code(), Code::kNotSupported);
  Region huge = good;
  huge.page_size = 2 * kMiB;
  EXPECT_EQ(start({huge}).code(), Code::kNotSupported);
  LiveSnapshotOptions with_parent;
  with_parent.image.parent = dir.File("nothing.pwi");
  EXPECT_EQ(start({good}, with_parent).code(), Code::kInvalidArgument);
  // A region the kernel cannot write-protect (a private file mapping,
  // declared as anonymous): registering it fails (regions register in
  // address order, so `good` may already be registered); nothing is left.
  TempDir files;
  const std::string fpath = files.File("plain-file");
  int fd = open(fpath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kMiB)), 0);
  void* fmap = mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);
  ASSERT_NE(fmap, MAP_FAILED);
  Region filemap = good;
  filemap.address = reinterpret_cast<uint64_t>(fmap);
  filemap.length = kMiB;
  filemap.name = "file";
  Status s = start({good, filemap});
  munmap(fmap, kMiB);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("registering region 'file'"), std::string::npos) << s.ToString();
  EXPECT_EQ(WriteProtectedPages(m.addr(), m.size()), 0u);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

}  // namespace
}  // namespace pagewise::live
