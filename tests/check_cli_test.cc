// End-to-end tests of `pagewise check`: runs the built binary
// (PAGEWISE_CLI_PATH) and checks its JSON, output and exit status.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "pagewise/check.h"
#include "pagewise/probe.h"
#include "pagewise/region.h"
#include "pagewise/tracker.h"
#include "testing/hugepages.h"
#include "testing/kvm_test_util.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `pagewise args...` with stdout and stderr captured in files.
CliRun RunCli(const std::vector<std::string>& args) {
  testing::TempDir dir;
  const std::string out_path = dir.File("out"), err_path = dir.File("err");
  std::vector<std::string> argv_s = {PAGEWISE_CLI_PATH};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(127);
    execv(argv[0], argv.data());
    _exit(127);
  }
  CliRun r;
  int status = 0;
  if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  }
  r.out = ReadAll(out_path);
  r.err = ReadAll(err_path);
  return r;
}

std::vector<std::string> AvailableAtomicBackends() {
  std::vector<std::string> out;
  for (const BackendInfo& b : DescribeBackends(Features())) {
    if (b.available && b.atomic) out.push_back(b.name);
  }
  return out;
}

void ExpectRunFields(const nlohmann::json& run) {
  for (const char* key : {"backend", "scenario", "rounds", "writes", "pages_compared",
                          "lost_writes", "ok", "pages_reported", "scenario_ops"}) {
    EXPECT_TRUE(run.contains(key)) << "missing \"" << key << "\" in " << run.dump();
  }
}

// Every scenario on one backend, at a small size and for a short time.
class CheckEveryScenario : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckEveryScenario, NoWriteLost) {
  PAGEWISE_REQUIRE_KVM();
  testing::HugePagePool pool(2 << 20, 16);  // the hugetlb scenario's 32 MiB
  ASSERT_TRUE(pool.ok()) << pool.reason();
  CliRun r = RunCli({"check", "--backend", GetParam(), "--scenario", "all", "--seconds", "1",
                     "--size", "32M", "--threads", "4", "--json"});
  // Every backend, mprotect included, passes `syscall` (read(2) from a pipe
  // into tracked memory): mprotect through its interposed read family.
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  nlohmann::json runs = nlohmann::json::parse(r.out);
  ASSERT_TRUE(runs.is_array()) << r.out;
  ASSERT_EQ(runs.size(), 9u) << r.out;
  std::vector<std::string> seen;
  for (const nlohmann::json& run : runs) {
    if (run.contains("skipped")) {
      // Only scenarios this backend can never track are skipped here (the
      // fixture reserved huge pages, and /dev/kvm exists on our machines).
      const std::string scenario = run["scenario"];
      EXPECT_FALSE(CheckApplies(*ParseBackend(GetParam()), (*ParseScenarios(scenario))[0]).ok())
          << run.dump();
      seen.push_back(scenario);
      continue;
    }
    ExpectRunFields(run);
    EXPECT_EQ(run["backend"], GetParam());
    EXPECT_EQ(run["ok"], true) << run.dump(2);
    EXPECT_EQ(run["lost_writes"], 0) << run.dump(2);
    EXPECT_EQ(run["pages_compared"], (32u << 20) / PageSize()) << run.dump();
    EXPECT_GT(run["rounds"].get<uint64_t>(), 1u) << run.dump();
    EXPECT_GT(run["writes"].get<uint64_t>(), 0u) << run.dump();
    EXPECT_GT(run["pages_reported"].get<uint64_t>(), 0u) << run.dump();
    const std::string scenario = run["scenario"];
    if (scenario != "writes" && scenario != "shmem" && scenario != "kvm") {
      EXPECT_GT(run["scenario_ops"].get<uint64_t>(), 0u) << run.dump();
    }
    seen.push_back(scenario);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"writes", "dontneed", "mprotect", "fork", "thp",
                                            "shmem", "syscall", "hugetlb", "kvm"}));
}

INSTANTIATE_TEST_SUITE_P(Available, CheckEveryScenario,
                         ::testing::ValuesIn(AvailableAtomicBackends()), [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

TEST(CheckCli, InjectedLossFailsTheCheck) {
  CliRun r = RunCli({"check", "--scenario", "writes", "--seconds", "0.5", "--size", "8M",
                     "--threads", "2", "--inject-loss", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  nlohmann::json run = nlohmann::json::parse(r.out);
  ASSERT_TRUE(run.is_object()) << r.out;
  ExpectRunFields(run);
  EXPECT_EQ(run["ok"], false);
  EXPECT_GT(run["lost_writes"].get<uint64_t>(), 0u);
  EXPECT_FALSE(run["lost_examples"].empty());
}

TEST(CheckCli, ReadableOutputAndSuccess) {
  CliRun r = RunCli(
      {"check", "--scenario", "dontneed", "--seconds", "0.3", "--size", "4M", "--threads", "2"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("dontneed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no write was lost"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "") << "progress must go to a terminal only";
}

TEST(CheckCli, UnknownBackend) {
  CliRun r = RunCli({"check", "--backend", "telepathy", "--seconds", "0.1"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("unknown tracking backend 'telepathy'"), std::string::npos) << r.err;
}

// Asks the probe: a kernel with soft-dirty runs the check (exit 0, or 1 if
// it lost writes: soft-dirty is not atomic); one without says so (exit 3).
TEST(CheckCli, SoftDirtyRunsOrIsUnavailable) {
  CliRun r = RunCli({"check", "--backend", "soft-dirty", "--seconds", "0.1"});
  if (Features().soft_dirty) {
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.out << r.err;
    EXPECT_EQ(r.err.find("not available"), std::string::npos) << r.err;
    return;
  }
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("soft-dirty is not available"), std::string::npos) << r.err;
}

TEST(CheckCli, UnknownScenarioAndBadSize) {
  CliRun r = RunCli({"check", "--scenario", "earthquake"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("unknown check scenario 'earthquake'"), std::string::npos) << r.err;
  r = RunCli({"check", "--size", "12Q"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("--size"), std::string::npos) << r.err;
  r = RunCli({"check", "--size", "100K", "--scenario", "writes"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("at least 1 MiB"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pagewise
