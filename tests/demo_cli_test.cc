// `pagewise demo` end to end on a small heap: the whole story (guarantee
// check, live snapshot under writers, incremental layers, chain verified,
// two fresh processes restored lazily through the page server) must end
// with matching content, and the prefetch run must have waited for the
// server's ready byte so that no prefetched page was faulted first.
#include <gtest/gtest.h>

#include <string>

#include "testing/cli_runner.h"

namespace {

using pagewise::testing::CliResult;
using pagewise::testing::RunCli;

TEST(DemoCli, SmallHeapTellsTheWholeStoryAndMatches) {
  CliResult r = RunCli(PAGEWISE_CLI_PATH, {"demo", "--size", "64M"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("lost writes 0 -> OK"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("== 3. live snapshot: 64 MiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layer 3:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("chain of 4 images verified"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("it waited for the server's ready byte); 0 of them faulted first"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("restored content matches the heap"), std::string::npos) << r.out;
}

TEST(DemoCli, RejectsATooSmallHeap) {
  CliResult r = RunCli(PAGEWISE_CLI_PATH, {"demo", "--size", "1M"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("at least 64M"), std::string::npos) << r.err;
}

}  // namespace
