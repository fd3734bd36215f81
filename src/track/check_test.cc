// Tests of the never-lose-a-write check engine (pagewise/check.h).
//
// The engine is checked against trackers whose behaviour is known:
//   - a reference tracker that reports every tracked page on every collect
//     (correct by construction: the engine must find no loss in any scenario,
//     which shows it has no false positives: torn copies, DONTNEED zeros,
//     protection changes and fork children are all accounted for);
//   - broken trackers (one that drops a range, one that reports nothing, one
//     that reads and re-arms in two steps like soft-dirty) and the engine's
//     own inject_loss mode: the engine must find the loss;
//   - the real backends this kernel offers, at a small size.
#include "pagewise/check.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pagewise/probe.h"
#include "pagewise/tracker.h"
#include "sys/pagemap.h"
#include "sys/uapi.h"  // a broken tracker built on the raw uffd-wp registration
#include "sys/userfaultfd.h"
#include "testing/hugepages.h"
#include "testing/kvm_test_util.h"

namespace pagewise {
namespace {

// Reports every tracked page on every Collect(). Never loses a write: any
// write that completed before Collect() started is covered by the copy the
// checker makes after Collect() returns.
class AllPagesTracker : public Tracker {
 public:
  TrackBackend backend() const override { return TrackBackend::kMprotect; }
  Status Track(void* addr, size_t len) override {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t a = reinterpret_cast<uint64_t>(addr);
    ranges_.push_back({a, a + len});
    return Status::Ok();
  }
  Status Untrack(void* addr, size_t len) override {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t a = reinterpret_cast<uint64_t>(addr);
    auto it = std::find(ranges_.begin(), ranges_.end(), PageRange{a, a + len});
    if (it == ranges_.end()) return Status::NotFound("range not tracked");
    ranges_.erase(it);
    return Status::Ok();
  }
  Status Collect(std::vector<PageRange>* written) override {
    std::lock_guard<std::mutex> lock(mu_);
    written->insert(written->end(), ranges_.begin(), ranges_.end());
    ++stats_.collects;
    return Status::Ok();
  }
  TrackerStats stats() const override { return stats_; }
  std::vector<PageRange> tracked() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return ranges_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<PageRange> ranges_;
  TrackerStats stats_;
};

// Forwards to another tracker but drops part of every report: the last page
// of the last range (`drop_page`), or everything (`drop_all`).
class LossyTracker : public Tracker {
 public:
  LossyTracker(std::unique_ptr<Tracker> inner, bool drop_all)
      : inner_(std::move(inner)), drop_all_(drop_all) {}
  TrackBackend backend() const override { return inner_->backend(); }
  Status Track(void* addr, size_t len) override { return inner_->Track(addr, len); }
  Status Untrack(void* addr, size_t len) override { return inner_->Untrack(addr, len); }
  Status Collect(std::vector<PageRange>* written) override {
    std::vector<PageRange> got;
    Status s = inner_->Collect(&got);
    if (drop_all_) {
      got.clear();
    } else if (!got.empty()) {
      got.back().end -= PageSize();
      if (got.back().end == got.back().start) got.pop_back();
    }
    written->insert(written->end(), got.begin(), got.end());
    return s;
  }
  TrackerStats stats() const override { return inner_->stats(); }
  std::vector<PageRange> tracked() const override { return inner_->tracked(); }

 private:
  std::unique_ptr<Tracker> inner_;
  bool drop_all_;
};

// Not atomic, like soft-dirty: Collect() reads the written pages
// (PAGEMAP_SCAN without WP_MATCHING), then write-protects the WHOLE range.
// A first write to a clean page landing between the two steps is never
// reported: a race loss, not a deterministic one.
class ReadThenClearAllTracker : public Tracker {
 public:
  TrackBackend backend() const override { return TrackBackend::kSoftDirty; }
  Status Track(void* addr, size_t len) override {
    sys::Userfaultfd::Options o;
    o.required_features =
        UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
    PW_ASSIGN_OR_RETURN(uffd_, sys::Userfaultfd::Open(o));
    PW_ASSIGN_OR_RETURN(scanner_, sys::PagemapScanner::Open());
    range_ = {reinterpret_cast<uint64_t>(addr), reinterpret_cast<uint64_t>(addr) + len};
    PW_RETURN_IF_ERROR(uffd_.Register(range_.start, len, UFFDIO_REGISTER_MODE_WP));
    return uffd_.WriteProtect(range_.start, len, true);
  }
  Status Untrack(void* addr, size_t len) override {
    return uffd_.Unregister(reinterpret_cast<uint64_t>(addr), len);
  }
  Status Collect(std::vector<PageRange>* written) override {
    PagemapScanArgs a;
    a.start = range_.start;
    a.end = range_.end;
    a.category_mask = a.return_mask = sys::page_is::kWritten;
    std::vector<PageRegion> regions;
    PW_RETURN_IF_ERROR(scanner_.ScanAll(a, &regions));
    for (const PageRegion& r : regions) written->push_back({r.start, r.end});
    return uffd_.WriteProtect(range_.start, range_.end - range_.start, true);
  }
  TrackerStats stats() const override { return {}; }
  std::vector<PageRange> tracked() const override { return {range_}; }

 private:
  sys::Userfaultfd uffd_;
  sys::PagemapScanner scanner_;
  PageRange range_;
};

CheckOptions Small(CheckScenario scenario) {
  CheckOptions o;
  o.scenario = scenario;
  o.threads = 3;
  o.duration = std::chrono::milliseconds(300);
  o.size = 4ull << 20;
  o.seed = 12345;
  return o;
}

std::function<Result<std::unique_ptr<Tracker>>()> Reference() {
  return []() -> Result<std::unique_ptr<Tracker>> {
    return std::unique_ptr<Tracker>(std::make_unique<AllPagesTracker>());
  };
}

std::vector<TrackBackend> AvailableBackends() {
  std::vector<TrackBackend> out;
  for (const BackendInfo& b : DescribeBackends(Features())) {
    if (!b.available || !b.atomic) continue;
    Result<TrackBackend> parsed = ParseBackend(b.name);
    if (parsed.ok()) out.push_back(*parsed);
  }
  return out;
}

TEST(CheckScenarioNames, RoundTripAndAll) {
  for (CheckScenario s : AllScenarios()) {
    Result<std::vector<CheckScenario>> r = ParseScenarios(ScenarioName(s));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ((*r)[0], s);
  }
  Result<std::vector<CheckScenario>> all = ParseScenarios("all");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 9u);
  Result<std::vector<CheckScenario>> bad = ParseScenarios("sometimes");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("dontneed"), std::string::npos);
}

TEST(CheckOptionsValidation, RejectsBadValues) {
  CheckOptions o = Small(CheckScenario::kWrites);
  o.make_tracker = Reference();
  o.threads = 0;
  EXPECT_EQ(RunCheck(o).status().code(), Code::kInvalidArgument);
  o.threads = 2;
  o.duration = Duration::zero();
  EXPECT_EQ(RunCheck(o).status().code(), Code::kInvalidArgument);
  o.duration = std::chrono::milliseconds(100);
  o.size = 4096;
  EXPECT_EQ(RunCheck(o).status().code(), Code::kInvalidArgument);
}

// The reference tracker never loses a write, so every scenario must come out
// clean: the engine itself creates no false losses.
class ReferenceTrackerScenarios : public ::testing::TestWithParam<CheckScenario> {};

TEST_P(ReferenceTrackerScenarios, NoFalseLoss) {
  std::optional<testing::HugePagePool> pool;
  if (GetParam() == CheckScenario::kHugetlb) {
    pool.emplace(2u << 20, 2);  // Small()'s 4 MiB
    ASSERT_TRUE(pool->ok()) << pool->reason();
  }
  if (GetParam() == CheckScenario::kKvm) PAGEWISE_REQUIRE_KVM();
  CheckOptions o = Small(GetParam());
  o.make_tracker = Reference();
  Result<CheckResult> r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok) << (r->lost_examples.empty() ? "" : r->lost_examples[0]);
  EXPECT_EQ(r->lost_writes, 0u);
  EXPECT_GT(r->writes, 0u);
  EXPECT_GE(r->rounds, 2u);
  EXPECT_EQ(r->pages_compared, r->region_bytes / PageSize());
  EXPECT_EQ(r->scenario, ScenarioName(GetParam()));
  if (GetParam() != CheckScenario::kWrites && GetParam() != CheckScenario::kShmem &&
      GetParam() != CheckScenario::kKvm) {
    EXPECT_GT(r->scenario_ops, 0u) << "the scenario's disturber never acted";
  }
}

INSTANTIATE_TEST_SUITE_P(All, ReferenceTrackerScenarios, ::testing::ValuesIn(AllScenarios()),
                         [](const auto& info) { return std::string(ScenarioName(info.param)); });

// Self-test: the collector drops one reported page per collect; the loss
// must be found and described.
TEST(CheckDetectsLoss, InjectLossMode) {
  CheckOptions o = Small(CheckScenario::kWrites);
  o.make_tracker = Reference();
  o.inject_loss = true;
  Result<CheckResult> r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->ok);
  EXPECT_GT(r->lost_writes, 0u);
  ASSERT_FALSE(r->lost_examples.empty());
  EXPECT_NE(r->lost_examples[0].find("page 0 "), std::string::npos) << r->lost_examples[0];
}

TEST(CheckDetectsLoss, TrackerThatReportsNothing) {
  CheckOptions o = Small(CheckScenario::kWrites);
  o.make_tracker = []() -> Result<std::unique_ptr<Tracker>> {
    return std::unique_ptr<Tracker>(
        std::make_unique<LossyTracker>(std::make_unique<AllPagesTracker>(), true));
  };
  Result<CheckResult> r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->ok);
  // Every page populated before Track and written since differs.
  EXPECT_GT(r->lost_writes, r->pages_compared / 2);
  ASSERT_FALSE(r->lost_examples.empty());
  EXPECT_NE(r->lost_examples[0].find("is missing from the replica"), std::string::npos)
      << r->lost_examples[0];
}

TEST(CheckDetectsLoss, NonAtomicReadThenClearTracker) {
  // Losses here come only from writes racing the gap between reading and
  // re-arming; the check must catch them in a short run.
  CheckOptions o = Small(CheckScenario::kWrites);
  o.duration = std::chrono::seconds(1);
  o.make_tracker = []() -> Result<std::unique_ptr<Tracker>> {
    return std::unique_ptr<Tracker>(std::make_unique<ReadThenClearAllTracker>());
  };
  Result<CheckResult> r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->ok);
  EXPECT_GT(r->lost_writes, 0u) << "rounds " << r->rounds << " writes " << r->writes;
}

TEST(CheckDetectsLoss, DroppedDontneedZeros) {
  // A tracker that reports nothing misses the zeros MADV_DONTNEED leaves.
  CheckOptions o = Small(CheckScenario::kDontneed);
  o.threads = 1;
  o.make_tracker = []() -> Result<std::unique_ptr<Tracker>> {
    return std::unique_ptr<Tracker>(
        std::make_unique<LossyTracker>(std::make_unique<AllPagesTracker>(), true));
  };
  Result<CheckResult> r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->lost_writes, 0u);
  EXPECT_GT(r->scenario_ops, 0u);
}

// The real backends this kernel offers.
class RealBackends : public ::testing::TestWithParam<TrackBackend> {};

TEST_P(RealBackends, WritesNoLoss) {
  CheckOptions o = Small(CheckScenario::kWrites);
  o.backend = GetParam();
  Result<CheckResult> r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->backend, BackendName(GetParam()));
  EXPECT_EQ(r->lost_writes, 0u) << (r->lost_examples.empty() ? "" : r->lost_examples[0]);
  EXPECT_TRUE(r->ok);
  EXPECT_GT(r->pages_reported, 0u);
}

TEST_P(RealBackends, DroppedRangeIsDetected) {
  CheckOptions o = Small(CheckScenario::kWrites);
  const TrackBackend backend = GetParam();
  o.make_tracker = [backend]() -> Result<std::unique_ptr<Tracker>> {
    PW_ASSIGN_OR_RETURN(std::unique_ptr<Tracker> inner, Tracker::Create({backend}));
    return std::unique_ptr<Tracker>(std::make_unique<LossyTracker>(std::move(inner), false));
  };
  Result<CheckResult> r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->ok);
  EXPECT_GT(r->lost_writes, 0u);
}

INSTANTIATE_TEST_SUITE_P(Available, RealBackends, ::testing::ValuesIn(AvailableBackends()),
                         [](const auto& info) {
                           std::string n(BackendName(info.param));
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// Where the kernel has soft-dirty the check runs it (soft-dirty is not
// atomic: it may find lost writes, which is what the check is for); where
// it lacks it, the check refuses with the probe's reason.
TEST(CheckBackends, SoftDirtyRunsOrIsNotSupported) {
  CheckOptions o = Small(CheckScenario::kWrites);
  o.backend = TrackBackend::kSoftDirty;
  Result<CheckResult> r = RunCheck(o);
  if (Features().soft_dirty) {
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return;
  }
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotSupported) << r.status().ToString();
  EXPECT_NE(r.status().message().find(Features().soft_dirty_reason), std::string::npos)
      << r.status().ToString();
}

}  // namespace
}  // namespace pagewise
