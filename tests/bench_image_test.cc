// `pagewise bench image --scale 0.01 --json -` runs end to end and prints
// rows with every required field, including the acceptance subjects.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace {

// Runs `cmd`, returning stdout and the exit status.
std::string RunCommand(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

TEST(BenchImageTest, SmallScaleJsonHasRequiredRows) {
  int status = 0;
  const std::string out = RunCommand(
      std::string(PAGEWISE_CLI_PATH) + " bench image --scale 0.01 --quiet --json -", &status);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  // The table comes first; the JSON array starts on its own line.
  size_t at = out.rfind("\n[");
  ASSERT_NE(at, std::string::npos) << out;
  nlohmann::json rows = nlohmann::json::parse(out.substr(at + 1), nullptr, false);
  ASSERT_FALSE(rows.is_discarded()) << out;
  ASSERT_TRUE(rows.is_array());
  std::set<std::string> seen;
  for (const auto& row : rows) {
    for (const char* field : {"subject", "metric", "value", "unit", "baseline", "baseline_value"}) {
      ASSERT_TRUE(row.contains(field)) << row.dump();
    }
    ASSERT_TRUE(row["value"].is_number()) << row.dump();
    ASSERT_TRUE(row["baseline_value"].is_number()) << row.dump();
    EXPECT_GT(row["value"].get<double>(), 0) << row.dump();
    EXPECT_GT(row["baseline_value"].get<double>(), 0) << row.dump();
    seen.insert(row["subject"].get<std::string>() + "/" + row["metric"].get<std::string>() + "/" +
                row["baseline"].get<std::string>());
  }
  for (const char* want :
       {"snapshot/none/write_raw", "snapshot/lz4/memcpy", "snapshot/zstd/write_raw",
        "restore/none/read_raw", "restore/zstd/memcpy", "rewind/0.1pct/fork_reset",
        "rewind/1pct/fork_reset", "rewind/1pct/full_copy", "rewind/10pct/full_copy",
        "import_half_zero/stored_bytes/raw_size"}) {
    EXPECT_TRUE(seen.count(want)) << "missing row " << want;
  }
}

}  // namespace
