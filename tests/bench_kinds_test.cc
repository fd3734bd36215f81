// `pagewise bench kinds --scale 0.02 --json -` runs a KVM guest on
// hugetlbfs memory and produces the uffd-wp-async rows beside the KVM
// dirty log's (the benchmark itself fails if either loses a guest write).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "testing/kvm_test_util.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

TEST(BenchKinds, SmallRunHasTheGuestRowsBesideTheDirtyLog) {
  PAGEWISE_REQUIRE_KVM();
  testing::TempDir dir;
  const std::string out_path = dir.File("out"), err_path = dir.File("err");
  const pid_t pid = fork();
  if (pid == 0) {
    const int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(127);
    execl(PAGEWISE_CLI_PATH, PAGEWISE_CLI_PATH, "bench", "kinds", "--scale", "0.02", "--json", "-",
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
  const std::string text = out.str();
  const size_t json_at = text.find("\n[");
  ASSERT_NE(json_at, std::string::npos) << text;
  nlohmann::json rows = nlohmann::json::parse(text.substr(json_at + 1));
  std::set<std::string> got;
  for (const nlohmann::json& row : rows) {
    EXPECT_GT(row["value"].get<double>(), 0) << row.dump();
    EXPECT_GT(row["baseline_value"].get<double>(), 0) << row.dump();
    got.insert(row["subject"].get<std::string>() + " " + row["metric"].get<std::string>() + " " +
               row["baseline"].get<std::string>());
  }
  EXPECT_EQ(got, (std::set<std::string>{"uffd-wp-async guest_collect_ms kvm_dirty_log",
                                        "uffd-wp-async guest_write_ns kvm_dirty_log"}));
}

}  // namespace
}  // namespace pagewise
