// `pagewise bench live --scale 0.01 --json -` runs and produces the rows the
// live-snapshot acceptance is judged on: subject "live" beside baseline
// "fork" for max_stall_ms, p99_write_us, extra_memory_mib and total_s, and
// beside baseline "no-snapshot" (the noise floor of the same run) for
// writes_per_s and max_stall_ms.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace {

// Runs `cmd`, returns its stdout; *status gets the wait status.
std::string RunCommand(const std::string& cmd, int* status) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  *status = pclose(f);
  return out;
}

TEST(BenchLive, SmallRunProducesLiveVersusForkRows) {
  int status = -1;
  const std::string out = RunCommand(
      std::string(PAGEWISE_CLI_PATH) + " bench live --scale 0.01 --quiet --json -", &status);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n" << out;
  // stdout holds the table, then the JSON array starting on its own line.
  const size_t start = out.find("\n[");
  ASSERT_NE(start, std::string::npos) << out;
  nlohmann::json rows = nlohmann::json::parse(out.substr(start + 1), nullptr, false);
  ASSERT_TRUE(rows.is_array()) << out;

  std::set<std::string> live_vs_fork, live_vs_idle;
  for (const auto& r : rows) {
    for (const char* k : {"subject", "metric", "value", "unit", "baseline", "baseline_value"}) {
      ASSERT_TRUE(r.contains(k)) << r.dump();
    }
    const double v = r["value"].get<double>(), b = r["baseline_value"].get<double>();
    EXPECT_TRUE(std::isfinite(v) && v >= 0) << r.dump();
    EXPECT_TRUE(std::isfinite(b) && b >= 0) << r.dump();
    if (r["subject"] == "live" && r["baseline"] == "no-snapshot") {
      live_vs_idle.insert(r["metric"].get<std::string>());
      EXPECT_GT(v, 0) << r.dump();
      EXPECT_GT(b, 0) << r.dump();
    }
    if (r["subject"] == "live" && r["baseline"] == "fork") {
      live_vs_fork.insert(r["metric"].get<std::string>());
      const std::string m = r["metric"];
      if (m == "max_stall_ms" || m == "total_s" || m == "extra_memory_mib" || m == "p99_write_us") {
        EXPECT_GT(v, 0) << r.dump();
        EXPECT_GT(b, 0) << r.dump();
      }
    }
  }
  for (const char* m : {"max_stall_ms", "p99_write_us", "extra_memory_mib", "total_s"}) {
    EXPECT_TRUE(live_vs_fork.count(m)) << "missing row live/" << m << " vs fork";
  }
  for (const char* m : {"max_stall_ms", "writes_per_s"}) {
    EXPECT_TRUE(live_vs_idle.count(m)) << "missing row live/" << m << " vs no-snapshot";
  }
}

}  // namespace
