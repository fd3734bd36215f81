// Working-set trace files: round trip and every corruption check.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "pagewise/restore.h"
#include "restore/restore_env.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

WorkingSetTrace Sample() {
  WorkingSetTrace t;
  t.page_size = 4096;
  t.source_size = 1 << 20;
  for (uint64_t i = 0; i < 50; ++i) t.entries.push_back({(i * 7 % 256) * 4096, i * 1000 + 3});
  return t;
}

std::string Slurp(const std::string& path) {
  std::string s;
  int fd = open(path.c_str(), O_RDONLY);
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
  close(fd);
  return s;
}

void Spit(const std::string& path, const std::string& s) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_EQ(write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size()));
  close(fd);
}

TEST(Trace, RoundTrip) {
  testing::TempDir dir;
  const std::string path = TracePathFor(dir.File("mem.img"));
  EXPECT_EQ(path, dir.File("mem.img.trace"));
  WorkingSetTrace t = Sample();
  ASSERT_TRUE(WriteTrace(path, t).ok());
  Result<WorkingSetTrace> r = ReadTrace(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->page_size, t.page_size);
  EXPECT_EQ(r->source_size, t.source_size);
  ASSERT_EQ(r->entries.size(), t.entries.size());
  for (size_t i = 0; i < t.entries.size(); ++i) {
    EXPECT_EQ(r->entries[i].offset, t.entries[i].offset);
    EXPECT_EQ(r->entries[i].time_ns, t.entries[i].time_ns);
  }
  EXPECT_EQ(Slurp(path).size(), 32u + 16u * 50u + 8u);
}

TEST(Trace, EveryFlippedByteIsCaught) {
  testing::TempDir dir;
  const std::string path = dir.File("t.trace");
  ASSERT_TRUE(WriteTrace(path, Sample()).ok());
  const std::string good = Slurp(path);
  for (size_t i = 0; i < good.size(); i += 13) {
    std::string bad = good;
    bad[i] ^= 0x20;
    Spit(path, bad);
    Result<WorkingSetTrace> r = ReadTrace(path);
    ASSERT_FALSE(r.ok()) << "flip at " << i;
    EXPECT_TRUE(r.status().code() == Code::kCorruption || r.status().code() == Code::kNotSupported)
        << r.status().ToString();
  }
}

TEST(Trace, TruncatedMissingAndEmpty) {
  testing::TempDir dir;
  const std::string path = dir.File("t.trace");
  EXPECT_EQ(ReadTrace(path).status().code(), Code::kNotFound);
  ASSERT_TRUE(WriteTrace(path, Sample()).ok());
  std::string good = Slurp(path);
  Spit(path, good.substr(0, good.size() - 9));
  EXPECT_EQ(ReadTrace(path).status().code(), Code::kCorruption);
  Spit(path, "short");
  EXPECT_EQ(ReadTrace(path).status().code(), Code::kCorruption);
  WorkingSetTrace empty;
  ASSERT_TRUE(WriteTrace(path, empty).ok());
  Result<WorkingSetTrace> r = ReadTrace(path);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->entries.empty());
}

TEST(Trace, FailedWriteLeavesOldTraceIntact) {
  testing::TempDir dir;
  const std::string path = dir.File("t.trace");
  ASSERT_TRUE(WriteTrace(path, Sample()).ok());
  testing::FaultEnv env;
  env.Inject(testing::Op::kPwrite, {.error = ENOSPC, .partial_bytes = 0, .skip = 0, .count = -1});
  WorkingSetTrace other = Sample();
  other.entries.resize(3);
  Status s = WriteTrace(path, other, &env);
  EXPECT_EQ(s.code(), Code::kNoSpace) << s.ToString();
  Result<WorkingSetTrace> r = ReadTrace(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->entries.size(), 50u);
  EXPECT_EQ(access((path + ".tmp." + std::to_string(getpid())).c_str(), F_OK), -1);
}

}  // namespace
}  // namespace pagewise
