// Tracker::Create: backend choice, unavailable/unknown backends (each
// asked of the probe, so the tests hold on any kernel), and the mprotect
// singleton.
#include <cstring>
#include <string>
#include <vector>

#include "pagewise/tracker.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"
#include "track/track_test_util.h"
#include "track/uffd_wp_tracker.h"

namespace pagewise::testing {
namespace {

// Auto picks the first backend DescribeBackends lists as available and
// atomic (uffd-wp-async where the kernel has it, as here).
TEST(TrackerCreate, AutoPicksTheFirstAvailableAtomicBackend) {
  std::string want;
  for (const BackendInfo& b : DescribeBackends(Features())) {
    if (b.available && b.atomic) {
      want = b.name;
      break;
    }
  }
  ASSERT_FALSE(want.empty()) << "no atomic backend on this kernel";
  Result<std::unique_ptr<Tracker>> t = Tracker::Create();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(BackendName((*t)->backend()), want);
  EXPECT_TRUE((*t)->tracked().empty());
  std::vector<PageRange> w;
  EXPECT_TRUE((*t)->Collect(&w).ok());
  EXPECT_TRUE(w.empty());
}

TEST(TrackerCreate, UnknownBackendIsInvalidArgument) {
  TrackerOptions o;
  o.backend = static_cast<TrackBackend>(42);
  Result<std::unique_ptr<Tracker>> t = Tracker::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kInvalidArgument) << t.status().ToString();
  EXPECT_NE(t.status().message().find("uffd-wp-async"), std::string::npos);

  Result<TrackBackend> b = ParseBackend("uffd-wp-asnyc");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Code::kInvalidArgument);
  for (TrackBackend x : {TrackBackend::kAuto, TrackBackend::kUffdWpAsync, TrackBackend::kUffdWp,
                         TrackBackend::kMprotect, TrackBackend::kSoftDirty}) {
    Result<TrackBackend> p = ParseBackend(BackendName(x));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(*p, x);
  }
}

// Portable: what the probe says decides what is tested. With soft-dirty
// (CONFIG_MEM_SOFT_DIRTY) the backend tracks real writes on this kernel;
// without it, Create refuses with the probe's reason and the alternatives.
TEST(TrackerCreate, SoftDirtyTracksWritesOrIsRefusedWithReasonAndAlternatives) {
  TrackerOptions o;
  o.backend = TrackBackend::kSoftDirty;
  Result<std::unique_ptr<Tracker>> t = Tracker::Create(o);
  if (!Features().soft_dirty) {
    EXPECT_FALSE(Features().soft_dirty_reason.empty());
    ASSERT_FALSE(t.ok()) << "the probe says soft-dirty is missing, yet Create succeeded";
    EXPECT_EQ(t.status().code(), Code::kNotSupported) << t.status().ToString();
    EXPECT_NE(t.status().message().find(Features().soft_dirty_reason), std::string::npos)
        << t.status().message();
    EXPECT_NE(t.status().message().find("uffd-wp-async"), std::string::npos);
    EXPECT_NE(t.status().message().find("mprotect"), std::string::npos);
    return;
  }
  ASSERT_TRUE(t.ok()) << "the probe says soft-dirty works: " << t.status().ToString();
  EXPECT_EQ((*t)->backend(), TrackBackend::kSoftDirty);
  const size_t ps = PageSize();
  Mapping m(16 * ps);
  std::memset(m.data(), 1, 16 * ps);  // populated before tracking starts
  ASSERT_TRUE((*t)->Track(m.data(), 16 * ps).ok());
  std::vector<PageRange> written;
  ASSERT_TRUE((*t)->Collect(&written).ok());  // a fresh baseline
  m.data()[3 * ps] = 2;
  m.data()[9 * ps + 5] = 2;
  written.clear();
  ASSERT_TRUE((*t)->Collect(&written).ok());
  std::vector<uint64_t> pages;
  for (const PageRange& r : written) {
    for (uint64_t a = r.start; a < r.end; a += ps) pages.push_back((a - m.addr()) / ps);
  }
  EXPECT_EQ(pages, (std::vector<uint64_t>{3, 9}));
}

TEST(TrackerCreate, DescribeBackendsMatchesWhatCreateDoes) {
  std::vector<BackendInfo> infos = DescribeBackends(Features());
  // uffd-wp-async, uffd-wp, mprotect, soft-dirty, then the two-step negative
  // control, which is never atomic and never chosen by kAuto.
  ASSERT_EQ(infos.size(), 5u);
  EXPECT_EQ(infos.back().name, "two-step");
  EXPECT_FALSE(infos.back().atomic);
  for (const BackendInfo& info : infos) {
    Result<TrackBackend> b = ParseBackend(info.name);
    ASSERT_TRUE(b.ok());
    TrackerOptions o;
    o.backend = *b;
    Result<std::unique_ptr<Tracker>> t = Tracker::Create(o);
    EXPECT_EQ(t.ok(), info.available) << info.name << ": " << t.status().ToString();
    if (!info.available) {
      EXPECT_FALSE(info.reason.empty());
    }
  }
}

TEST(TrackerCreate, UffdWpReturnsTheHookableClass) {
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kUffdWp);
  ASSERT_NE(t, nullptr);
  EXPECT_NE(dynamic_cast<UffdWpTracker*>(t.get()), nullptr);
  std::unique_ptr<Tracker> a = MakeTracker(TrackBackend::kUffdWpAsync);
  EXPECT_EQ(dynamic_cast<UffdWpTracker*>(a.get()), nullptr);
}

TEST(TrackerCreate, OnlyOneMprotectTrackerPerProcess) {
  std::unique_ptr<Tracker> first = MakeTracker(TrackBackend::kMprotect);
  ASSERT_NE(first, nullptr);
  TrackerOptions o;
  o.backend = TrackBackend::kMprotect;
  Result<std::unique_ptr<Tracker>> second = Tracker::Create(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kFailedPrecondition) << second.status().ToString();
  first.reset();
  Result<std::unique_ptr<Tracker>> third = Tracker::Create(o);
  EXPECT_TRUE(third.ok()) << third.status().ToString();
}

TEST(TrackerCreate, KernelCallFailuresAreReported) {
  struct Case {
    TrackBackend backend;
    Op op;
  };
  for (Case c :
       {Case{TrackBackend::kUffdWpAsync, Op::kUffdCreate},
        Case{TrackBackend::kUffdWpAsync, Op::kUffdApi},
        Case{TrackBackend::kUffdWpAsync, Op::kOpenPagemap},
        Case{TrackBackend::kUffdWp, Op::kUffdCreate}, Case{TrackBackend::kUffdWp, Op::kOpenPagemap},
        Case{TrackBackend::kUffdWp, Op::kEventfdCreate}, Case{TrackBackend::kUffdWp, Op::kMmap}}) {
    FaultEnv env;
    env.Inject(c.op, {EMFILE});
    TrackerOptions o;
    o.backend = c.backend;
    Result<std::unique_ptr<Tracker>> t = CreateTracker(o, &env);
    EXPECT_FALSE(t.ok()) << BackendName(c.backend) << " op " << static_cast<int>(c.op);
    EXPECT_EQ(env.Fired(c.op), 1);
    // And it works once the fault is gone.
    env.Clear();
    Result<std::unique_ptr<Tracker>> again = CreateTracker(o, &env);
    EXPECT_TRUE(again.ok()) << again.status().ToString();
  }
}

}  // namespace
}  // namespace pagewise::testing
