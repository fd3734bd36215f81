// The check's hugetlb and kvm scenarios on the real backends: no write is
// lost where the backend can track the memory, a clear kNotSupported where
// it cannot (or where the machine lacks free huge pages), and a loss is
// found when one is injected into a KVM guest's run.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "pagewise/check.h"
#include "pagewise/probe.h"
#include "testing/hugepages.h"
#include "testing/kvm_test_util.h"

namespace pagewise {
namespace {

constexpr uint64_t kHuge = 2u << 20;

CheckOptions Small(CheckScenario scenario, TrackBackend backend) {
  CheckOptions o;
  o.scenario = scenario;
  o.backend = backend;
  o.threads = 3;
  o.duration = std::chrono::milliseconds(400);
  o.size = 8ull << 20;
  o.seed = 4242;
  return o;
}

std::vector<TrackBackend> AtomicBackends() {
  std::vector<TrackBackend> out;
  for (const BackendInfo& b : DescribeBackends(Features())) {
    if (b.available && b.atomic) out.push_back(*ParseBackend(b.name));
  }
  return out;
}

class CheckKinds : public ::testing::TestWithParam<TrackBackend> {};

TEST_P(CheckKinds, HugetlbNoLossOrClearRefusal) {
  testing::HugePagePool pool(kHuge, 4);
  ASSERT_TRUE(pool.ok()) << pool.reason();
  Result<CheckResult> r = RunCheck(Small(CheckScenario::kHugetlb, GetParam()));
  if (!CheckApplies(GetParam(), CheckScenario::kHugetlb).ok()) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kNotSupported);
    EXPECT_NE(r.status().message().find("uffd-wp-async"), std::string::npos);
    return;
  }
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok) << (r->lost_examples.empty() ? "" : r->lost_examples[0]);
  EXPECT_EQ(r->lost_writes, 0u);
  EXPECT_GT(r->scenario_ops, 0u) << "no huge page was dropped";
  EXPECT_EQ(r->region_bytes % kHuge, 0u);
  EXPECT_GT(r->pages_reported, 0u);
}

TEST_P(CheckKinds, KvmGuestWritesNoLossOrClearRefusal) {
  PAGEWISE_REQUIRE_KVM();
  CheckOptions o = Small(CheckScenario::kKvm, GetParam());
  Result<CheckResult> r = RunCheck(o);
  if (!CheckApplies(GetParam(), CheckScenario::kKvm).ok()) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kNotSupported) << r.status().ToString();
    return;
  }
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok) << (r->lost_examples.empty() ? "" : r->lost_examples[0]);
  EXPECT_GT(r->writes, 0u);
  EXPECT_GE(r->rounds, 2u);
  // A guest alone (one writer) is tracked too.
  o.threads = 1;
  r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok) << (r->lost_examples.empty() ? "" : r->lost_examples[0]);
  EXPECT_GT(r->writes, 0u);
}

TEST_P(CheckKinds, KvmInjectedLossIsFound) {
  PAGEWISE_REQUIRE_KVM();
  if (!CheckApplies(GetParam(), CheckScenario::kKvm).ok()) return;  // refused above
  CheckOptions o = Small(CheckScenario::kKvm, GetParam());
  o.threads = 1;  // only the guest writes: the loss must be one of its writes
  o.inject_loss = true;
  Result<CheckResult> r = RunCheck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->ok);
  EXPECT_GT(r->lost_writes, 0u);
}

INSTANTIATE_TEST_SUITE_P(Available, CheckKinds, ::testing::ValuesIn(AtomicBackends()),
                         [](const auto& info) {
                           std::string n(BackendName(info.param));
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(CheckKindsSetup, HugetlbWithoutEnoughFreeHugePagesSaysHowToAddThem) {
  Result<HugePagePoolInfo> pool = ReadHugePagePool(kHuge);
  ASSERT_TRUE(pool.ok());
  CheckOptions o = Small(CheckScenario::kHugetlb, TrackBackend::kUffdWpAsync);
  // More huge pages than the pool has (and more than this machine's memory
  // could give, so a concurrent reservation cannot make it fit).
  o.size = (pool->available() + 1) * kHuge;
  o.size = std::max<uint64_t>(o.size, 1ull << 40);
  Result<CheckResult> r = RunCheck(o);
  ASSERT_FALSE(r.ok());
  // ValidateCheckOptions refuses sizes beyond half the memory first.
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
  o.size = 64ull << 20;                 // 32 huge pages: more than a test-sized pool
  if (pool->available() >= 32) return;  // someone's reservation covers it
  r = RunCheck(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotSupported) << r.status().ToString();
  EXPECT_NE(r.status().message().find("nr_hugepages"), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace pagewise
