// End to end: `pagewise probe` reports this kernel's features (asked of
// the library's probe, so the tests hold on any kernel).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "pagewise/probe.h"
#include "pagewise/tracker.h"
#include "sys/uapi.h"  // feature bits newer than the system headers, to name what JSON lists
#include "testing/cli_runner.h"

namespace pagewise {
namespace {

using ::pagewise::testing::RunCli;

// What `pagewise probe --json` reports is what the library's probe found on
// this kernel, whatever the kernel has: each listed feature granted, each
// granted one listed; every backend's availability as DescribeBackends says,
// with a reason where it is unavailable.
TEST(ProbeCliTest, JsonAgreesWithTheLibraryProbeOnThisKernel) {
  auto r = RunCli(PAGEWISE_CLI_PATH, {"probe", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  const KernelFeatures& f = Features();
  EXPECT_EQ(j["kernel"].get<std::string>(), f.kernel_release);
  ASSERT_EQ(j["uffd"]["available"].get<bool>(), f.uffd_available);
  auto features = j["uffd"]["features"].get<std::vector<std::string>>();
  const std::pair<const char*, uint64_t> named[] = {{"WP_ASYNC", UFFD_FEATURE_WP_ASYNC},
                                                    {"MOVE", UFFD_FEATURE_MOVE},
                                                    {"EVENT_FORK", UFFD_FEATURE_EVENT_FORK},
                                                    {"WP_UNPOPULATED", UFFD_FEATURE_WP_UNPOPULATED},
                                                    {"POISON", UFFD_FEATURE_POISON},
                                                    {"MINOR_SHMEM", UFFD_FEATURE_MINOR_SHMEM},
                                                    {"EVENT_REMOVE", UFFD_FEATURE_EVENT_REMOVE}};
  for (const auto& [name, bit] : named) {
    const bool listed = std::find(features.begin(), features.end(), name) != features.end();
    EXPECT_EQ(listed, f.HasUffd(bit)) << name;
  }
  EXPECT_EQ(j["pagemap_scan"].get<bool>(), f.pagemap_scan);
  EXPECT_EQ(j["soft_dirty"].get<bool>(), f.soft_dirty);
  std::map<std::string, nlohmann::json> backends;
  for (const auto& b : j["backends"]) backends[b["name"]] = b;
  const std::vector<BackendInfo> infos = DescribeBackends(f);
  ASSERT_EQ(backends.size(), infos.size());  // with the two-step negative control
  EXPECT_FALSE(backends["two-step"]["atomic"].get<bool>());
  for (const BackendInfo& b : infos) {
    ASSERT_EQ(backends.count(b.name), 1u) << b.name;
    EXPECT_EQ(backends[b.name]["available"].get<bool>(), b.available) << b.name;
    EXPECT_EQ(backends[b.name]["atomic"].get<bool>(), b.atomic) << b.name;
    if (!b.available) {
      EXPECT_FALSE(backends[b.name]["reason"].get<std::string>().empty()) << b.name;
    }
  }
}

TEST(ProbeCliTest, JsonReportsMemoryKindsAndHugePagePools) {
  auto r = RunCli(PAGEWISE_CLI_PATH, {"probe", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  std::map<std::string, nlohmann::json> kinds;
  for (const auto& k : j["memory_kinds"]) kinds[k["capability"]] = k;
  for (const char* c : {"MISSING_HUGETLBFS", "MISSING_SHMEM", "MINOR_HUGETLBFS", "MINOR_SHMEM",
                        "WP_HUGETLBFS_SHMEM", "MOVE"}) {
    ASSERT_EQ(kinds.count(c), 1u) << c;
    // Each is either supported, or says why not.
    EXPECT_NE(kinds[c]["supported"].get<bool>(), !kinds[c]["reason"].get<std::string>().empty())
        << c;
  }
  EXPECT_EQ(j["hugetlbfs"]["default_page_size"].get<uint64_t>(), 2u << 20);
  bool has_2m = false;
  for (const auto& p : j["hugetlbfs"]["pools"]) {
    has_2m = has_2m || p["page_size"].get<uint64_t>() == (2u << 20);
    EXPECT_LE(p["free"].get<uint64_t>(), p["total"].get<uint64_t>() + p["surplus"].get<uint64_t>());
  }
  EXPECT_TRUE(has_2m);
  EXPECT_FALSE(j["thp"]["shmem"].get<std::string>().empty());
}

TEST(ProbeCliTest, TableNamesEveryBackend) {
  auto r = RunCli(PAGEWISE_CLI_PATH, {"probe"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"uffd-wp-async", "uffd-wp", "mprotect", "soft-dirty", "PAGEMAP_SCAN",
                           "MINOR_SHMEM", "hugetlbfs pools"}) {
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
  }
}

TEST(ProbeCliTest, UnknownCommandFailsWithUsage) {
  auto r = RunCli(PAGEWISE_CLI_PATH, {"no-such-command"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(r.err.empty());
}

}  // namespace
}  // namespace pagewise
