// PAGEWISE_SKIP: the one way a pagewise test skips.
//
// A test may skip only for what a user's machine can lack (/dev/kvm, CRIU
// 4.1+, hugepages the pool cannot give), and the reason must say how to get
// it. Under PAGEWISE_FORBID_SKIP=1 (.ci/run: on the machines we own every
// feature and peer exists, so a skip is a broken probe or setup) the macro
// fails the test instead, with the same reason. ctest would count a plain
// GTEST_SKIP as "skipped" whatever the exit code (gtest_discover_tests
// matches gtest's "[  SKIPPED ]" line), hence a macro rather than a check
// after the run; scripts/lint.sh keeps GTEST_SKIP out of every other file.
//
// Use it like GTEST_SKIP(), in a test body or SetUp():
//   if (!kvm.ok()) PAGEWISE_SKIP() << kvm.status().ToString();
// Thread-safety: the same as gtest's assertions (the main test thread).
#ifndef PAGEWISE_TESTING_SKIP_H_
#define PAGEWISE_TESTING_SKIP_H_

#include <gtest/gtest.h>

namespace pagewise::testing {

// True when PAGEWISE_FORBID_SKIP=1 is set in the environment.
bool SkipsForbidden();

}  // namespace pagewise::testing

// Expands like GTEST_SKIP() (gtest's own GTEST_SKIP_ spelling), with the
// result type chosen at run time.
#define PAGEWISE_SKIP()                                                                        \
  return GTEST_MESSAGE_(                                                                       \
      ::pagewise::testing::SkipsForbidden() ? "FORBIDDEN SKIP (PAGEWISE_FORBID_SKIP=1 is set)" \
                                            : "Skipped",                                       \
      ::pagewise::testing::SkipsForbidden() ? ::testing::TestPartResult::kFatalFailure         \
                                            : ::testing::TestPartResult::kSkip)

#endif  // PAGEWISE_TESTING_SKIP_H_
