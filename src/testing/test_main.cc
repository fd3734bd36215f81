// gtest main for pagewise tests. With PAGEWISE_FORBID_SKIP=1 (set by
// `make test` and ctest), a skipped test fails the run: on machines we own
// every kernel feature exists, so a skip means a broken probe or setup.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

namespace {

class ForbidSkips : public ::testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Skipped()) {
      skipped_++;
      std::fprintf(stderr, "FORBIDDEN SKIP: %s.%s\n", info.test_suite_name(), info.name());
    }
  }
  int skipped() const { return skipped_; }

 private:
  int skipped_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* forbid = std::getenv("PAGEWISE_FORBID_SKIP");
  ForbidSkips* listener = nullptr;
  if (forbid != nullptr && std::strcmp(forbid, "1") == 0) {
    listener = new ForbidSkips();  // owned by gtest's listener list
    ::testing::UnitTest::GetInstance()->listeners().Append(listener);
  }
  int rc = RUN_ALL_TESTS();
  if (rc == 0 && listener != nullptr && listener->skipped() > 0) {
    std::fprintf(stderr, "%d test(s) skipped while PAGEWISE_FORBID_SKIP=1\n", listener->skipped());
    return 1;
  }
  return rc;
}
