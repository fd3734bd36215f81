// `pagewise bench track --scale 0.02 --json -` runs and produces, for every
// available atomic backend, each metric beside its baselines.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pagewise/probe.h"
#include "pagewise/tracker.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

TEST(BenchTrack, SmallRunHasEveryRowAndBaseline) {
  testing::TempDir dir;
  const std::string out_path = dir.File("out"), err_path = dir.File("err");
  const pid_t pid = fork();
  if (pid == 0) {
    const int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(127);
    execl(PAGEWISE_CLI_PATH, PAGEWISE_CLI_PATH, "bench", "track", "--scale", "0.02", "--json", "-",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  std::ifstream out_f(out_path), err_f(err_path);
  std::stringstream out, err;
  out << out_f.rdbuf();
  err << err_f.rdbuf();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out.str() << err.str();

  // stdout: the table, then the JSON array on a line of its own.
  const std::string text = out.str();
  const size_t json_at = text.find("\n[");
  ASSERT_NE(json_at, std::string::npos) << text;
  nlohmann::json rows = nlohmann::json::parse(text.substr(json_at + 1));
  ASSERT_TRUE(rows.is_array());

  std::set<std::string> got;  // "subject metric baseline"
  for (const nlohmann::json& row : rows) {
    for (const char* key : {"subject", "metric", "value", "unit", "baseline", "baseline_value"}) {
      ASSERT_TRUE(row.contains(key)) << "missing \"" << key << "\" in " << row.dump();
    }
    EXPECT_GT(row["value"].get<double>(), 0) << row.dump();
    EXPECT_GT(row["baseline_value"].get<double>(), 0) << row.dump();
    EXPECT_FALSE(row["baseline"].get<std::string>().empty()) << row.dump();
    got.insert(row["subject"].get<std::string>() + " " + row["metric"].get<std::string>() + " " +
               row["baseline"].get<std::string>());
  }
  size_t expected = 0;
  for (const BackendInfo& b : DescribeBackends(Features())) {
    if (!b.available || !b.atomic) continue;
    EXPECT_TRUE(got.count(b.name + " first_write plain_write")) << b.name;
    expected += 1;
    for (const char* m : {"collect_0pct", "collect_1pct", "collect_10pct", "collect_100pct"}) {
      EXPECT_TRUE(got.count(b.name + " " + m + " raw_ioctl")) << b.name << " " << m;
      EXPECT_TRUE(got.count(b.name + " " + m + " hash_compare")) << b.name << " " << m;
      expected += 2;
    }
  }
  EXPECT_GT(expected, 0u);
  EXPECT_EQ(rows.size(), expected);
}

}  // namespace
}  // namespace pagewise
