// Fault injection: a kernel call failing at any step of Track, Untrack or
// Collect leaves nothing half-tracked and loses no write.
#include <sys/mman.h>

#include <cerrno>

#include "pagewise/tracker.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"
#include "track/track_internal.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

void Poke(char* p, char v) { *static_cast<volatile char*>(p) = v; }

// The range is back to how the program left it: read-write in the maps, and
// not registered with any userfaultfd (another tracker can take it).
void ExpectUntouched(const Mapping& m) {
  Result<std::vector<track_internal::Vma>> maps = track_internal::ReadMaps(Env::Default());
  ASSERT_TRUE(maps.ok());
  for (const auto& v : *maps) {
    if (v.end <= m.addr() || v.start >= m.addr() + m.size()) continue;
    EXPECT_EQ(v.prot, PROT_READ | PROT_WRITE) << "left protected";
  }
  std::unique_ptr<Tracker> other = MakeTracker(TrackBackend::kUffdWpAsync);
  ASSERT_NE(other, nullptr);
  Status s = other->Track(m.data(), m.size());
  EXPECT_TRUE(s.ok()) << "left registered: " << s.ToString();
  EXPECT_TRUE(other->Untrack(m.data(), m.size()).ok());
  Poke(m.page(0), 1);  // writable without a tracker
}

class TrackerFaultTest : public ::testing::TestWithParam<TrackBackend> {};

TEST_P(TrackerFaultTest, TrackFailingAtAnyStepLeavesNothingTracked) {
  int failures_seen = 0;
  for (Op op : {Op::kOpen, Op::kPread, Op::kMmap, Op::kUffdRegister, Op::kUffdWriteProtect,
                Op::kMprotect}) {
    for (int skip = 0; skip < 8; ++skip) {
      FaultEnv env;
      std::unique_ptr<Tracker> t = MakeTracker(GetParam(), &env);
      ASSERT_NE(t, nullptr);
      Mapping m(16 * Pg());
      env.Inject(op, {EIO, 0, skip, 1});
      Status s = t->Track(m.data(), m.size());
      if (env.Fired(op) == 0) {  // Track makes fewer calls of this kind
        EXPECT_TRUE(s.ok()) << s.ToString();
        break;
      }
      failures_seen++;
      SCOPED_TRACE("op " + std::to_string(static_cast<int>(op)) + " skip " + std::to_string(skip));
      EXPECT_FALSE(s.ok());
      EXPECT_TRUE(t->tracked().empty());
      ExpectUntouched(m);
      // Tracks cleanly afterwards, reporting only new writes.
      env.Clear();
      ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
      EXPECT_TRUE(CollectPages(t.get(), m.data(), 16).empty());
      Poke(m.page(9), 2);
      EXPECT_EQ(CollectPages(t.get(), m.data(), 16), (std::set<size_t>{9}));
    }
  }
  EXPECT_GE(failures_seen, 3) << "fault injection never reached Track's kernel calls";
}

TEST_P(TrackerFaultTest, UntrackFailureKeepsTheRangeTracked) {
  FaultEnv env;
  std::unique_ptr<Tracker> t = MakeTracker(GetParam(), &env);
  Mapping m(8 * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  const Op op = GetParam() == TrackBackend::kMprotect ? Op::kMprotect : Op::kUffdUnregister;
  env.Inject(op, {EIO});
  Status s = t->Untrack(m.data(), m.size());
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(t->tracked().size(), 1u);
  Poke(m.page(3), 1);  // still tracked, so still reported
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{3}));
  EXPECT_TRUE(t->Untrack(m.data(), m.size()).ok());
  EXPECT_TRUE(t->tracked().empty());
  ExpectUntouched(m);
}

// The call Collect makes to re-arm (or, for uffd-wp, to sweep).
Op CollectOp(TrackBackend b) {
  switch (b) {
    case TrackBackend::kMprotect:
      return Op::kMprotect;
    case TrackBackend::kUffdWp:
      return Op::kUffdWriteProtect;
    default:
      return Op::kPagemapScan;
  }
}

TEST_P(TrackerFaultTest, CollectFailureLosesNothing) {
  FaultEnv env;
  std::unique_ptr<Tracker> t = MakeTracker(GetParam(), &env);
  Mapping m(64 * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  Poke(m.page(1), 1);
  Poke(m.page(40), 1);
  env.Inject(CollectOp(GetParam()), {EIO});
  std::vector<PageRange> w;
  Status s = t->Collect(&w);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(env.Fired(CollectOp(GetParam())), 1);
  std::set<size_t> first;
  for (const PageRange& r : w) {
    for (uint64_t a = r.start; a < r.end; a += Pg()) first.insert((a - m.addr()) / Pg());
  }
  Poke(m.page(7), 1);  // a write after the failed collect
  std::set<size_t> second = CollectPages(t.get(), m.data(), 64);
  // Every write shows up: nothing reported-and-not-re-armed is forgotten.
  for (size_t p : {size_t{1}, size_t{40}}) EXPECT_TRUE(first.count(p) || second.count(p)) << p;
  EXPECT_TRUE(second.count(7));
  EXPECT_TRUE(CollectPages(t.get(), m.data(), 64).empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, TrackerFaultTest,
                         ::testing::Values(TrackBackend::kUffdWpAsync, TrackBackend::kUffdWp,
                                           TrackBackend::kMprotect),
                         BackendParamName);

// PAGEMAP_SCAN stopping half way (the second ioctl fails): the regions the
// first ioctl reported were re-armed, so they must be returned now; the rest
// comes with the next collect.
TEST(UffdWpAsyncFaults, PartialScanReturnsWhatWasReArmed) {
  FaultEnv env;
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWpAsync, &env);
  constexpr size_t kPages = 4096;  // every other page written: 2048 regions, > one ioctl's 1024
  Mapping m(kPages * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  for (size_t i = 0; i < kPages; i += 2) Poke(m.page(i), 1);
  env.Inject(Op::kPagemapScan, {EIO, 0, /*skip=*/1, 1});
  std::vector<PageRange> w;
  EXPECT_FALSE(t->Collect(&w).ok());
  EXPECT_EQ(env.Fired(Op::kPagemapScan), 1);
  std::set<size_t> first;
  for (const PageRange& r : w) {
    for (uint64_t a = r.start; a < r.end; a += Pg()) first.insert((a - m.addr()) / Pg());
  }
  EXPECT_EQ(first.size(), 1024u) << "the first ioctl's regions must be returned";
  std::set<size_t> second = CollectPages(t.get(), m.data(), kPages);
  EXPECT_EQ(second.size(), 1024u);
  for (size_t i = 0; i < kPages; i += 2) {
    EXPECT_TRUE(first.count(i) + second.count(i) == 1) << "page " << i;
  }
}

// A failing unprotect on the tracker thread is reported by the next collect;
// the writer is woken, faults again and is served.
TEST(UffdWpFaults, FailedUnprotectIsRetriedAndReported) {
  FaultEnv env;
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWp, &env);
  Mapping m(8 * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  env.Inject(Op::kUffdWriteProtect, {EIO});
  Poke(m.page(2), 5);  // completes once the retry succeeds
  EXPECT_EQ(env.Fired(Op::kUffdWriteProtect), 1);
  std::vector<PageRange> w;
  Status s = t->Collect(&w);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("tracker thread"), std::string::npos) << s.ToString();
  EXPECT_EQ(w, (std::vector<PageRange>{{m.addr() + 2 * Pg(), m.addr() + 3 * Pg()}}));
  EXPECT_TRUE(CollectPages(t.get(), m.data(), 8).empty());
}

TEST(UffdWpFaults, FailedUffdReadIsReportedAndServedLater) {
  FaultEnv env;
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWp, &env);
  Mapping m(8 * Pg());
  ASSERT_TRUE(t->Track(m.data(), m.size()).ok());
  env.Inject(Op::kUffdRead, {EIO});
  Poke(m.page(6), 5);
  std::vector<PageRange> w;
  Status s = t->Collect(&w);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(w, (std::vector<PageRange>{{m.addr() + 6 * Pg(), m.addr() + 7 * Pg()}}));
}

}  // namespace
}  // namespace pagewise::testing
