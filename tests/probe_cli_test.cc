// End to end: `pagewise probe` reports this kernel's features.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "testing/cli_runner.h"

namespace pagewise {
namespace {

using ::pagewise::testing::RunCli;

TEST(ProbeCliTest, JsonHasRequiredFieldsAndTruthForThisKernel) {
  auto r = RunCli(PAGEWISE_CLI_PATH, {"probe", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_FALSE(j["kernel"].get<std::string>().empty());
  ASSERT_TRUE(j["uffd"]["available"].get<bool>());
  auto features = j["uffd"]["features"].get<std::vector<std::string>>();
  for (const char* want : {"WP_ASYNC", "MOVE", "EVENT_FORK", "WP_UNPOPULATED", "POISON",
                           "MINOR_SHMEM", "EVENT_REMOVE"}) {
    EXPECT_NE(std::find(features.begin(), features.end(), want), features.end()) << want;
  }
  EXPECT_TRUE(j["pagemap_scan"].get<bool>());
  EXPECT_FALSE(j["soft_dirty"].get<bool>());  // this kernel lacks it
  std::map<std::string, nlohmann::json> backends;
  for (const auto& b : j["backends"]) backends[b["name"]] = b;
  ASSERT_EQ(backends.size(), 5u);  // and the two-step negative control:
  EXPECT_FALSE(backends["two-step"]["atomic"].get<bool>());
  for (const char* name : {"uffd-wp-async", "uffd-wp", "mprotect"}) {
    EXPECT_TRUE(backends[name]["available"].get<bool>()) << name;
    EXPECT_TRUE(backends[name]["atomic"].get<bool>()) << name;
  }
  EXPECT_FALSE(backends["soft-dirty"]["available"].get<bool>());
  EXPECT_FALSE(backends["soft-dirty"]["reason"].get<std::string>().empty());
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
