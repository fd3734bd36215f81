// gtest main for pagewise tests.
//
// Tests skip through PAGEWISE_SKIP (testing/skip.h), which fails instead
// under PAGEWISE_FORBID_SKIP=1 (.ci/run). This main is the backstop: it
// names every skipped test (with the marker PAGEWISE_SKIPPED, which ctest's
// SKIP_REGULAR_EXPRESSION reports as skipped for tests registered with
// add_test) and, under PAGEWISE_FORBID_SKIP=1, prints FORBIDDEN SKIP and
// exits 1 for a skip that got past the macro.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

class SkipReporter : public ::testing::EmptyTestEventListener {
 public:
  explicit SkipReporter(bool forbid) : forbid_(forbid) {}
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (!info.result()->Skipped()) return;
    skipped_++;
    std::fprintf(stderr, "%s: %s.%s\n", forbid_ ? "FORBIDDEN SKIP" : "PAGEWISE_SKIPPED",
                 info.test_suite_name(), info.name());
  }
  int skipped() const { return skipped_; }

 private:
  bool forbid_;
  int skipped_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* env = std::getenv("PAGEWISE_FORBID_SKIP");
  const bool forbid = env != nullptr && std::strcmp(env, "1") == 0;
  auto* reporter = new SkipReporter(forbid);  // owned by gtest's listener list
  ::testing::UnitTest::GetInstance()->listeners().Append(reporter);
  int rc = RUN_ALL_TESTS();
  if (rc == 0 && forbid && reporter->skipped() > 0) {
    std::fprintf(stderr, "%d test(s) skipped while PAGEWISE_FORBID_SKIP=1\n", reporter->skipped());
    return 1;
  }
  return rc;
}
