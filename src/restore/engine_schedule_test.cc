// Scheduler: demand windows, stream detection and read-ahead, background
// order (prefetch list, hints, address order) and prefetch waste.
#include "restore/engine_schedule.h"

#include <gtest/gtest.h>

namespace pagewise::restore {
namespace {

constexpr size_t kPs = 4096;
constexpr uint64_t kBase = 0x100000;

SpaceMap Map(size_t pages) {
  SpaceMap m(kPs);
  m.Add(kBase, pages * kPs, 0);
  return m;
}

TEST(EngineSchedule, SequentialFaultsBecomeAStreamWithGrowingReadahead) {
  const Scheduler sched(kPs, 16, 64, nullptr, /*readahead=*/true);
  SpaceMap map = Map(4096);
  SpaceSchedule s;
  uint64_t next = kBase;
  std::vector<size_t> ra;
  for (int fault = 0; fault < 6; ++fault) {
    const restore::Run run = sched.DemandRun(map, next);
    ASSERT_EQ(run.addr, next);
    map.Set(run.addr, run.pages, PageState::kFilled);
    const restore::Run ahead = sched.AfterDemand(map, s, run);
    ra.push_back(ahead.pages);
    next = run.addr + run.pages * kPs;
    if (ahead.pages > 0) {
      EXPECT_EQ(ahead.addr, next) << "read-ahead starts where the window ended";
      map.Set(ahead.addr, ahead.pages, PageState::kFilled);
      sched.AfterReadahead(s, ahead);
      next = ahead.addr + ahead.pages * kPs;
    }
  }
  // No read-ahead for the first two faults, then 32, 64, 128, 256 pages.
  EXPECT_EQ(ra, (std::vector<size_t>{0, 0, 32, 64, 128, 256}));
  // A jump elsewhere ends the stream.
  const restore::Run far = sched.DemandRun(map, kBase + 3000 * kPs);
  EXPECT_EQ(sched.AfterDemand(map, s, far).pages, 0u);
  EXPECT_EQ(s.streak, 0u);
}

TEST(EngineSchedule, NoReadaheadWhenTurnedOff) {
  const Scheduler sched(kPs, 16, 64, nullptr, /*readahead=*/false);
  SpaceMap map = Map(1024);
  SpaceSchedule s;
  for (uint64_t p = 0; p < 10 * 16; p += 16) {
    const restore::Run run = sched.DemandRun(map, kBase + p * kPs);
    map.Set(run.addr, run.pages, PageState::kFilled);
    EXPECT_EQ(sched.AfterDemand(map, s, run).pages, 0u);
  }
  EXPECT_GE(s.streak, 2u);  // the stream is seen, only not read ahead
}

TEST(EngineSchedule, BackgroundOrderPrefetchThenHintsThenAddressOrder) {
  const std::vector<uint64_t> prefetch = {100 * kPs, 101 * kPs, 100 * kPs, 999999 * kPs, 7 * kPs};
  const Scheduler sched(kPs, 16, 64, &prefetch, true);
  SpaceMap map = Map(1024);
  SpaceSchedule s;
  FillKind kind;
  uint64_t waste = 0;
  std::vector<restore::Run> runs = sched.PlanBackground(map, s, true, &kind, &waste);
  EXPECT_EQ(kind, FillKind::kPrefetch);
  ASSERT_EQ(runs.size(), 2u);  // page 7, and pages 100-101 coalesced
  EXPECT_EQ(runs[0].addr, kBase + 7 * kPs);
  EXPECT_EQ(runs[1].pages, 2u);
  // The duplicate 100 is planned once, 999999 is outside the map: both
  // are waste.
  EXPECT_EQ(waste, 2u);
  for (const restore::Run& r : runs) map.Set(r.addr, r.pages, PageState::kFilled);
  // A hint (after a demand run at 500) comes before address order.
  s.hints.push_back(kBase + 500 * kPs);
  runs = sched.PlanBackground(map, s, true, &kind, &waste);
  EXPECT_EQ(kind, FillKind::kBackground);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].addr, kBase + 500 * kPs);
  EXPECT_EQ(runs[0].pages, 64u);
  map.Set(runs[0].addr, runs[0].pages, PageState::kFilled);
  // The hint is followed on (the next 64 pages), then address order.
  runs = sched.PlanBackground(map, s, true, &kind, &waste);
  EXPECT_EQ(runs[0].addr, kBase + 564 * kPs);
  map.Set(runs[0].addr, runs[0].pages, PageState::kFilled);
  s.hints.clear();
  runs = sched.PlanBackground(map, s, true, &kind, &waste);
  EXPECT_EQ(runs[0].addr, kBase);
  // Without background fill only prefetch runs are planned.
  EXPECT_TRUE(sched.PlanBackground(map, s, false, &kind, &waste).empty());
}

}  // namespace
}  // namespace pagewise::restore
