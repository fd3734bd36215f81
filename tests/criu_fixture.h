// The fixture CRIU tests share: a CRIU that works here (or a skip saying
// how to get one), a Harness in a fresh temporary directory, and the
// workload program started as a user would and dumped.
//
// Thread safety: one fixture per test, used from the test's thread.
#ifndef PAGEWISE_TESTS_CRIU_FIXTURE_H_
#define PAGEWISE_TESTS_CRIU_FIXTURE_H_

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "criu/harness.h"
#include "gtest/gtest.h"
#include "testing/skip.h"
#include "testing/test_util.h"

namespace pagewise {

inline const char* kCli = PAGEWISE_CLI_PATH;
inline const char* kWorkload = PAGEWISE_CRIU_WORKLOAD;

class CriuFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<criu::CriuBinary> c = criu::FindCriu();
    if (!c.ok()) PAGEWISE_SKIP() << c.status().ToString();
    h_ = std::make_unique<criu::Harness>(*c, tmp_.path());
  }

  // A new directory in the test's temporary directory.
  std::string Dir(const std::string& name) {
    const std::string d = tmp_.File(name);
    std::filesystem::create_directories(d);
    return d;
  }

  // Starts the workload with `args`, dumps it into `dump` (created), and
  // returns its pid (-1 after a failed expectation).
  pid_t StartAndDump(const std::vector<std::string>& args, const std::string& dump) {
    std::filesystem::create_directories(dump);
    std::vector<std::string> argv = {kWorkload, "--ready", "{READY}"};
    argv.insert(argv.end(), args.begin(), args.end());
    Result<pid_t> pid = h_->StartProgram(argv);
    EXPECT_TRUE(pid.ok()) << pid.status().ToString();
    if (!pid.ok()) return -1;
    Status st = h_->Dump(*pid, dump);
    EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << Text("criu.err");
    return st.ok() ? *pid : -1;
  }

  // A file of the test's directory (daemon output, logs); "" if missing.
  std::string Text(const std::string& name) { return h_->ReadText(tmp_.File(name)); }

  testing::TempDir tmp_;
  std::unique_ptr<criu::Harness> h_;
};

}  // namespace pagewise

#endif  // PAGEWISE_TESTS_CRIU_FIXTURE_H_
