// `pagewise live-demo` end to end: for each memory kind, the tool takes a
// live snapshot under running writers and verifies the image against memory
// at the snapshot instant (exit 0, "yes"); a bad option fails cleanly.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace {

std::string RunCommand(const std::string& cmd, int* status) {
  std::string out;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  *status = pclose(f);
  return out;
}

TEST(LiveDemo, VerifiesTheImageForEveryMemoryKind) {
  for (const char* kind : {"anon", "memfd", "thp"}) {
    int status = -1;
    const std::string out = RunCommand(
        std::string(PAGEWISE_CLI_PATH) + " live-demo --size-mib 16 --kind " + kind, &status);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << kind << ":\n" << out;
    EXPECT_NE(out.find("equals memory at the snapshot instant: yes (0 of 4096 pages differ)"),
              std::string::npos)
        << kind << ":\n"
        << out;
  }
}

TEST(LiveDemo, RejectsAnUnknownKind) {
  int status = -1;
  const std::string out =
      RunCommand(std::string(PAGEWISE_CLI_PATH) + " live-demo --size-mib 4 --kind disk", &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << out;
  EXPECT_NE(out.find("--kind must be anon, memfd or thp"), std::string::npos) << out;
}

}  // namespace
