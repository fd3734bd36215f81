// Live snapshot in tracker mode: a uffd-wp tracker's Collect() is the
// snapshot instant; the live image is then the base of an incremental layer
// holding exactly what the tracker reports written since T, and the chain
// restores to memory at the later instant. Writers run throughout.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "live/live_env.h"
#include "live/live_test_harness.h"
#include "pagewise/image.h"
#include "pagewise/live.h"
#include "pagewise/tracker.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::live {
namespace {

using pagewise::testing::FillPage;
using pagewise::testing::Mapping;
using pagewise::testing::MemKind;
using pagewise::testing::TempDir;
using testing::CompareImage;
using testing::WriterPool;

constexpr size_t kMiB = 1 << 20;
const size_t kPage = static_cast<size_t>(getpagesize());

Region TestRegion(const Mapping& m, MemKind kind) {
  Region r;
  r.address = m.addr();
  r.length = m.size();
  r.page_size = static_cast<uint32_t>(kPage);
  r.prot = PROT_READ | PROT_WRITE;
  r.kind = kind == MemKind::kMemfdShared ? RegionKind::kShared : RegionKind::kAnonymous;
  r.name = "heap";
  return r;
}

std::unique_ptr<Tracker> UffdWpTracker() {
  TrackerOptions o;
  o.backend = TrackBackend::kUffdWp;
  Result<std::unique_ptr<Tracker>> t = Tracker::Create(o);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(t).value() : nullptr;
}

class LiveTracker : public ::testing::TestWithParam<MemKind> {};

TEST_P(LiveTracker, LiveBaseAndFirstLayerRestoreToTheLaterInstant) {
  const MemKind kind = GetParam();
  TempDir dir;
  const size_t len = (testing::kSanitized ? 8 : 16) * kMiB;
  Mapping m(len, kind);
  for (size_t i = 0; i < len / kPage; ++i) {
    if (i % 4 != 3) FillPage(m.page(i), 21, i);
  }
  std::unique_ptr<Tracker> tracker = UffdWpTracker();
  ASSERT_NE(tracker, nullptr);
  ASSERT_TRUE(tracker->Track(m.data(), len).ok());
  // Writers stay out of the last quarter: there the tracker must report
  // exactly the one page the test writes after T.
  const size_t quiet = len / 4 * 3;
  WriterPool writers(m.data(), quiet, 2, 22);
  writers.Start();
  uint64_t by_fault = 0;
  for (int it = 0; it < (testing::kSanitized ? 2 : 3); ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    writers.WaitForBatches(writers.writes() / 32 + 8);
    const std::string base = dir.File("base" + std::to_string(it) + ".pwi");
    const std::string layer = dir.File("layer" + std::to_string(it) + ".pwi");
    LiveSnapshotOptions o;
    o.tracker = tracker.get();
    o.image.chunk_bytes = 4096;
    std::vector<char> at_t(len), later(len);
    writers.Pause();
    Result<std::unique_ptr<LiveSnapshot>> snap =
        LiveSnapshot::Start(base, {TestRegion(m, kind)}, o);
    std::memcpy(at_t.data(), m.data(), len);
    writers.Resume();
    ASSERT_TRUE(snap.ok()) << snap.status().ToString();
    Status s = (*snap)->Wait();
    ASSERT_TRUE(s.ok()) << s.ToString();
    by_fault += (*snap)->stats().pages_by_fault;
    EXPECT_EQ((*snap)->stats().pages_background + (*snap)->stats().pages_by_fault, len / kPage);
    // The sentinel page is gone again: only the caller's range is tracked.
    ASSERT_EQ(tracker->tracked().size(), 1u);
    EXPECT_EQ(tracker->tracked()[0], (PageRange{m.addr(), m.addr() + len}));
    EXPECT_EQ(CompareImage(base, 0, at_t.data(), len), "");

    // More writes, then the first incremental layer at a later instant.
    const size_t marked = quiet / kPage + 7 + static_cast<size_t>(it);
    m.page(marked)[100] ^= 0x5a;
    writers.WaitForBatches(writers.writes() / 32 + 16);
    writers.Pause();
    std::vector<PageRange> written;
    ASSERT_TRUE(tracker->Collect(&written).ok());
    std::memcpy(later.data(), m.data(), len);
    ImageWriteOptions wo;
    wo.parent = base;
    Result<std::unique_ptr<ImageWriter>> w = ImageWriter::Create(layer, wo);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    uint64_t layer_pages = 0;
    for (const PageRange& r : written) {
      for (uint64_t a = std::max<uint64_t>(r.start, m.addr() + quiet); a < r.end; a += kPage) {
        EXPECT_EQ(a, m.addr() + marked * kPage) << "reported a page nobody wrote since T";
      }
      ASSERT_TRUE((*w)->AddPages(0, r.start - m.addr(), later.data() + (r.start - m.addr()),
                                 r.end - r.start)
                      .ok());
      layer_pages += (r.end - r.start) / kPage;
    }
    ASSERT_TRUE((*w)->Commit().ok());
    writers.Resume();

    // Every page that changed since T is in the report (the chain check
    // below depends on it).
    size_t changed = 0;
    for (size_t off = 0; off < len; off += kPage) {
      if (std::memcmp(at_t.data() + off, later.data() + off, kPage) != 0) changed++;
    }
    EXPECT_GT(changed, 0u);
    EXPECT_GE(layer_pages, changed);
    EXPECT_EQ(CompareImage(layer, 0, later.data(), len), "");
  }
  writers.Stop();
  EXPECT_GT(by_fault, 0u)
      << "writers never hit a page before the saver: the hook was not exercised";
  EXPECT_TRUE(tracker->Untrack(m.data(), len).ok());
}

// Writers are NOT held at T here, so hook calls race Collect(): a write
// whose fault the tracker serves just before T must land in the base image,
// one just after T must be preceded by a save. Any mistake shows as a page
// whose base content is stale and that the layer does not override: the
// chain must equal memory at the later instant.
TEST_P(LiveTracker, ChainIsExactWhenWritersRunThroughT) {
  const MemKind kind = GetParam();
  TempDir dir;
  const size_t len = 8 * kMiB;
  Mapping m(len, kind);
  for (size_t i = 0; i < len / kPage; ++i) FillPage(m.page(i), 23, i);
  std::unique_ptr<Tracker> tracker = UffdWpTracker();
  ASSERT_NE(tracker, nullptr);
  ASSERT_TRUE(tracker->Track(m.data(), len).ok());
  WriterPool writers(m.data(), len, 2, 24);
  writers.Start();
  for (int it = 0; it < (testing::kSanitized ? 3 : 6); ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    // Pages written since the previous round are writable again only after
    // a collect; collecting now leaves every page protected, so the writers
    // fault (and call the hook) right up to T.
    std::vector<PageRange> ignored;
    ASSERT_TRUE(tracker->Collect(&ignored).ok());
    writers.WaitForBatches(writers.writes() / 32 + 4);
    const std::string base = dir.File("base" + std::to_string(it) + ".pwi");
    LiveSnapshotOptions o;
    o.tracker = tracker.get();
    o.image.chunk_bytes = 4096;
    Result<std::unique_ptr<LiveSnapshot>> snap =
        LiveSnapshot::Start(base, {TestRegion(m, kind)}, o);
    ASSERT_TRUE(snap.ok()) << snap.status().ToString();
    ASSERT_TRUE((*snap)->Wait().ok());
    writers.WaitForBatches(writers.writes() / 32 + 4);
    writers.Pause();
    std::vector<PageRange> written;
    ASSERT_TRUE(tracker->Collect(&written).ok());
    std::vector<char> now(m.data(), m.data() + len);
    ImageWriteOptions wo;
    wo.parent = base;
    wo.chunk_bytes = 4096;
    const std::string layer = dir.File("layer" + std::to_string(it) + ".pwi");
    Result<std::unique_ptr<ImageWriter>> w = ImageWriter::Create(layer, wo);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    for (const PageRange& r : written) {
      ASSERT_TRUE(
          (*w)->AddPages(0, r.start - m.addr(), now.data() + (r.start - m.addr()), r.end - r.start)
              .ok());
    }
    ASSERT_TRUE((*w)->Commit().ok());
    writers.Resume();
    EXPECT_EQ(CompareImage(layer, 0, now.data(), len), "");
  }
  writers.Stop();
}

INSTANTIATE_TEST_SUITE_P(Kinds, LiveTracker,
                         ::testing::Values(MemKind::kAnonPrivate, MemKind::kMemfdShared),
                         [](const ::testing::TestParamInfo<MemKind>& i) {
                           return std::string(i.param == MemKind::kAnonPrivate ? "Anon" : "Memfd");
                         });

TEST(LiveTrackerErrors, WrongBackendOrUntrackedRegionIsRefused) {
  TempDir dir;
  Mapping m(4 * kMiB, MemKind::kAnonPrivate);
  TrackerOptions ao;
  ao.backend = TrackBackend::kUffdWpAsync;
  Result<std::unique_ptr<Tracker>> async = Tracker::Create(ao);
  ASSERT_TRUE(async.ok()) << async.status().ToString();
  ASSERT_TRUE((*async)->Track(m.data(), m.size()).ok());
  LiveSnapshotOptions o;
  o.tracker = async->get();
  Status s =
      LiveSnapshot::Start(dir.File("a.pwi"), {TestRegion(m, MemKind::kAnonPrivate)}, o).status();
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("uffd-wp"), std::string::npos) << s.message();
  ASSERT_TRUE((*async)->Untrack(m.data(), m.size()).ok());

  std::unique_ptr<Tracker> t = UffdWpTracker();
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->Track(m.data(), m.size() / 2).ok());
  o.tracker = t.get();
  s = LiveSnapshot::Start(dir.File("b.pwi"), {TestRegion(m, MemKind::kAnonPrivate)}, o).status();
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("not (entirely) tracked"), std::string::npos) << s.message();
  EXPECT_EQ(t->tracked().size(), 1u);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

// A failing image in tracker mode: the hook is removed, writers are never
// held, and the tracker keeps working (its next Collect succeeds and
// reports the pages written meanwhile).
TEST(LiveTrackerErrors, ImageFailureRemovesTheHookAndKeepsTracking) {
  TempDir dir;
  const size_t len = 8 * kMiB;
  Mapping m(len, MemKind::kAnonPrivate);
  for (size_t i = 0; i < len / kPage; ++i) FillPage(m.page(i), 31, i);
  std::unique_ptr<Tracker> tracker = UffdWpTracker();
  ASSERT_NE(tracker, nullptr);
  ASSERT_TRUE(tracker->Track(m.data(), len).ok());
  pagewise::testing::FaultEnv fenv;
  fenv.Inject(pagewise::testing::Op::kPwrite, {ENOSPC, 0, 20, -1});
  WriterPool writers(m.data(), len, 2, 32);
  writers.Start();
  writers.WaitForBatches(8);
  LiveSnapshotOptions o;
  o.tracker = tracker.get();
  o.image.chunk_bytes = 4096;
  o.fault_queue_pages = 8;
  Result<std::unique_ptr<LiveSnapshot>> snap = StartLiveSnapshot(
      dir.File("t.pwi"), {TestRegion(m, MemKind::kAnonPrivate)}, o, Env::Default(), &fenv);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  Status s = (*snap)->Wait();
  writers.WaitForBatches(writers.writes() / 32 + 8);
  writers.Stop();
  EXPECT_EQ(s.code(), Code::kNoSpace) << s.ToString();
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  std::vector<PageRange> written;
  ASSERT_TRUE(tracker->Collect(&written).ok());
  EXPECT_FALSE(written.empty());
  EXPECT_EQ(tracker->tracked().size(), 1u);
  // Still tracking: a new write is reported by the next collect.
  m.page(5)[0] ^= 1;
  written.clear();
  ASSERT_TRUE(tracker->Collect(&written).ok());
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(written[0].start, m.addr() + 5 * kPage);
}

}  // namespace
}  // namespace pagewise::live
