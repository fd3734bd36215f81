// gtest main for pagewise tests.
//
// A test may skip only for what a user's machine can lack (/dev/kvm, CRIU
// 4.1+), saying how to get it. Each skip prints the marker PAGEWISE_SKIPPED,
// which ctest's SKIP_REGULAR_EXPRESSION (CMakeLists.txt) turns into a
// "skipped" result. With PAGEWISE_FORBID_SKIP=1 (set by .ci/run: on the
// machines we own everything exists, so a skip means a broken probe or
// setup) a skip instead prints FORBIDDEN SKIP, no marker, and the program
// exits 1, so ctest reports a failure.
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
