// End-to-end tests of `pagewise explore`: every race with pagewise's real
// rules keeps its invariants on every schedule, and every negative control
// (--variant) is caught with its first violating schedule.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "pagewise/explore.h"
#include "testing/cli_runner.h"

namespace pagewise {
namespace {

std::vector<nlohmann::json> Rows(const std::string& out) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

TEST(ExploreCli, EveryRaceKeepsItsInvariants) {
  const testing::CliResult r =
      testing::RunCli(PAGEWISE_CLI_PATH, {"explore", "--race", "all", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::vector<nlohmann::json> rows = Rows(r.out);
  ASSERT_EQ(rows.size(), ExploreRaces().size()) << r.out;
  for (const nlohmann::json& row : rows) {
    SCOPED_TRACE(row.dump());
    for (const char* key : {"race", "schedules", "exhaustive", "violations"}) {
      EXPECT_TRUE(row.contains(key)) << key;
    }
    EXPECT_EQ(row["violations"].get<uint64_t>(), 0u);
    EXPECT_GT(row["schedules"].get<uint64_t>(), 1u) << "a race with one schedule is not a race";
    EXPECT_TRUE(row["exhaustive"].is_boolean());
    EXPECT_FALSE(row.contains("error"));
    if (!row["exhaustive"].get<bool>()) {
      EXPECT_FALSE(row["bound"].get<std::string>().empty());
    }
  }
}

class ExploreVariant : public ::testing::TestWithParam<std::string> {};

TEST_P(ExploreVariant, IsCaughtWithItsSchedule) {
  const testing::CliResult r =
      testing::RunCli(PAGEWISE_CLI_PATH, {"explore", "--variant", GetParam(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << "the variant was not caught on every race:\n" << r.out << r.err;
  const std::vector<nlohmann::json> rows = Rows(r.out);
  ASSERT_FALSE(rows.empty());
  for (const nlohmann::json& row : rows) {
    SCOPED_TRACE(row.dump());
    EXPECT_EQ(row["variant"], GetParam());
    EXPECT_GT(row["violations"].get<uint64_t>(), 0u);
    ASSERT_TRUE(row.contains("first_violation_schedule"));
    EXPECT_FALSE(row["first_violation_schedule"].empty());
    EXPECT_FALSE(row["first_violation"].empty());
  }
}

std::vector<std::string> VariantNames() {
  std::vector<std::string> out;
  for (const ExploreVariantInfo& v : ExploreVariants()) out.push_back(v.name);
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, ExploreVariant, ::testing::ValuesIn(VariantNames()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string n = i.param;
                           for (char& c : n) {
                             if (c == '-') c = '_';
                           }
                           return n;
                         });

TEST(ExploreCli, UnknownNamesAreRefused) {
  testing::CliResult r = testing::RunCli(PAGEWISE_CLI_PATH, {"explore", "--race", "nope"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("valid: all,"), std::string::npos) << r.err;
  r = testing::RunCli(PAGEWISE_CLI_PATH, {"explore", "--variant", "nope"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("eagain-without-drain"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pagewise
