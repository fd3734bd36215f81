// `pagewise bench rewind --scale 0.01 --json -` runs end to end (checking
// every rewind it times) and prints the acceptance rows with every field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "testing/cli_runner.h"

namespace pagewise::testing {
namespace {

TEST(BenchRewindTest, SmallScaleJsonHasTheAcceptanceRows) {
  CliResult r =
      RunCli(PAGEWISE_CLI_PATH, {"bench", "rewind", "--scale", "0.01", "--quiet", "--json", "-"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // The table comes first; the JSON array starts on its own line.
  const size_t at = r.out.rfind("\n[");
  ASSERT_NE(at, std::string::npos) << r.out;
  nlohmann::json rows = nlohmann::json::parse(r.out.substr(at + 1), nullptr, false);
  ASSERT_TRUE(rows.is_array()) << r.out;
  std::set<std::string> seen;
  for (const auto& row : rows) {
    for (const char* field : {"subject", "metric", "value", "unit", "baseline", "baseline_value"}) {
      ASSERT_TRUE(row.contains(field)) << row.dump();
    }
    EXPECT_GT(row["value"].get<double>(), 0) << row.dump();
    EXPECT_GT(row["baseline_value"].get<double>(), 0) << row.dump();
    seen.insert(row["subject"].get<std::string>() + "/" + row["metric"].get<std::string>() + "/" +
                row["baseline"].get<std::string>());
  }
  for (const char* want :
       {"rewind_16mib_50p/p50_us/scan_copy_floor", "rewind_16mib_50p/p50_us/fork_reset",
        "rewind_256mib_50p/p50_us/scan_copy_floor", "rewind_256mib_50p/p50_us/fork_reset"}) {
    EXPECT_TRUE(seen.count(want)) << "missing row " << want;
  }
}

}  // namespace
}  // namespace pagewise::testing
