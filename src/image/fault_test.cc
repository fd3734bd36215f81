// Crash-safe writing under injected I/O faults: ENOSPC, EIO and short
// writes at every write of an image, failing fsync/rename. Afterwards: a
// clean error, nothing at the final path (or the earlier image there,
// intact), no temporary file left behind.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "image/image_env.h"
#include "pagewise/image.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::FaultEnv;
using testing::FillPage;
using testing::Op;
using testing::TempDir;

constexpr uint32_t kPs = 4096;
constexpr size_t kPages = 64;

std::vector<char> Content(uint64_t seed) {
  std::vector<char> v(kPages * kPs, 0);
  for (size_t i = 0; i < kPages; ++i) {
    if (i % 4 != 3) FillPage(v.data() + i * kPs, seed, i);
  }
  return v;
}

// Writes Content(seed) as an image at `path` through `env`, adding pages in
// eight calls. Returns the first error.
Status WriteImage(Env* env, const std::string& path, uint64_t seed) {
  ImageWriteOptions opt;
  opt.chunk_bytes = 8 * kPs;  // 8 pages a chunk: many writes
  opt.compression = seed % 2 ? Compression::kLz4 : Compression::kNone;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w, CreateImageWriter(path, opt, env));
  Region r;
  r.length = kPages * kPs;
  r.page_size = kPs;
  r.name = "m";
  Result<uint32_t> idx = w->AddRegion(r);
  if (!idx.ok()) return idx.status();
  std::vector<char> data = Content(seed);
  for (size_t i = 0; i < 8; ++i) {
    PW_RETURN_IF_ERROR(w->AddPages(0, i * 8 * kPs, data.data() + i * 8 * kPs, 8 * kPs));
  }
  return w->Commit();
}

// True if `path` is a valid image holding exactly Content(seed).
::testing::AssertionResult HoldsContent(const std::string& path, uint64_t seed) {
  auto img = Image::Open(path);
  if (!img.ok()) return ::testing::AssertionFailure() << img.status().ToString();
  Status v = (*img)->Verify();
  if (!v.ok()) return ::testing::AssertionFailure() << v.ToString();
  std::vector<char> back(kPages * kPs);
  Status s = (*img)->Read(0, 0, back.data(), back.size());
  if (!s.ok()) return ::testing::AssertionFailure() << s.ToString();
  if (back != Content(seed)) return ::testing::AssertionFailure() << "wrong content";
  return ::testing::AssertionSuccess();
}

size_t FilesIn(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++n;
  }
  return n;
}

TEST(ImageFaults, FailingWriteAtEveryPointLeavesEarlierImageIntact) {
  TempDir dir;
  const std::string path = dir.File("img");
  // A clean run counts the writes.
  FaultEnv counter;
  ASSERT_TRUE(WriteImage(&counter, path, 1).ok());
  const int writes = counter.Calls(Op::kPwrite);
  ASSERT_GE(writes, 5);
  ASSERT_TRUE(HoldsContent(path, 1));
  for (int err : {ENOSPC, EIO}) {
    for (int at = 0; at < writes; ++at) {
      for (uint64_t partial : {uint64_t{0}, uint64_t{100}}) {
        FaultEnv env;
        // From write `at` on: with partial > 0 each write is cut short to
        // `partial` bytes (progress) until a remainder <= partial fails.
        env.Inject(Op::kPwrite, {err, partial, at, -1});
        Status s = WriteImage(&env, path, 2);
        ASSERT_FALSE(s.ok()) << "fault at write " << at << " did not surface";
        EXPECT_EQ(s.code(), err == ENOSPC ? Code::kNoSpace : Code::kIoError) << s.ToString();
        EXPECT_NE(s.message().find(path), std::string::npos) << s.ToString();
        EXPECT_TRUE(HoldsContent(path, 1)) << "earlier image damaged, fault at write " << at;
        EXPECT_EQ(FilesIn(dir.path()), 1u) << "temporary file left behind";
      }
    }
  }
  // Without an earlier image: nothing appears at all.
  const std::string fresh = dir.File("fresh");
  for (int at = 0; at < writes; at += 3) {
    FaultEnv env;
    env.Inject(Op::kPwrite, {ENOSPC, 0, at, -1});
    ASSERT_FALSE(WriteImage(&env, fresh, 3).ok());
    EXPECT_FALSE(std::filesystem::exists(fresh));
    EXPECT_EQ(FilesIn(dir.path()), 1u);
  }
}

TEST(ImageFaults, ShortWritesAreCompletedNotErrors) {
  TempDir dir;
  const std::string path = dir.File("img");
  FaultEnv env;
  env.Inject(Op::kPwrite, {0, 7, 0, 300});  // 300 writes of only 7 bytes
  ASSERT_TRUE(WriteImage(&env, path, 4).ok());
  EXPECT_EQ(env.Fired(Op::kPwrite), 300);
  EXPECT_TRUE(HoldsContent(path, 4));
}

TEST(ImageFaults, FailingFsyncCloseOrRenameLeavesEarlierImage) {
  TempDir dir;
  const std::string path = dir.File("img");
  ASSERT_TRUE(WriteImage(Env::Default(), path, 1).ok());
  for (Op op : {Op::kFsync, Op::kClose, Op::kRename, Op::kOpen}) {
    FaultEnv env;
    env.Inject(op, {EIO, 0, 0, 1});
    Status s = WriteImage(&env, path, 2);
    ASSERT_FALSE(s.ok()) << static_cast<int>(op);
    EXPECT_EQ(env.Fired(op), 1);
    EXPECT_TRUE(HoldsContent(path, 1)) << static_cast<int>(op);
    EXPECT_EQ(FilesIn(dir.path()), 1u) << static_cast<int>(op);
  }
  // Only the directory fsync fails: the new image is complete and in place.
  FaultEnv env;
  env.Inject(Op::kFsyncParentDir, {EIO, 0, 0, 1});
  Status s = WriteImage(&env, path, 2);
  EXPECT_EQ(s.code(), Code::kIoError);
  EXPECT_NE(s.message().find("power loss"), std::string::npos) << s.ToString();
  EXPECT_TRUE(HoldsContent(path, 2));
  EXPECT_EQ(FilesIn(dir.path()), 1u);
}

// With threads = 1 the caller writes each chunk itself: the error is
// returned by the very call (writer_test.cc covers the pipelined writer).
TEST(ImageFaults, FailedWriterRefusesFurtherPagesAndCommit) {
  TempDir dir;
  FaultEnv env;
  ImageWriteOptions opt;
  opt.chunk_bytes = 4096;
  opt.compression = Compression::kNone;
  opt.threads = 1;
  auto w = CreateImageWriter(dir.File("img"), opt, &env);
  ASSERT_TRUE(w.ok());
  Region r;
  r.length = 4 * kPs;
  ASSERT_TRUE((*w)->AddRegion(r).ok());
  std::vector<char> page(kPs);
  FillPage(page.data(), 1, 1);
  env.Inject(Op::kPwrite, {ENOSPC, 0, 0, 1});
  EXPECT_EQ((*w)->AddPages(0, 0, page.data(), kPs).code(), Code::kNoSpace);
  FillPage(page.data(), 1, 2);
  EXPECT_EQ((*w)->AddPages(0, kPs, page.data(), kPs).code(), Code::kNoSpace);
  EXPECT_EQ((*w)->Commit().code(), Code::kNoSpace);
  EXPECT_EQ(FilesIn(dir.path()), 0u);
}

}  // namespace
}  // namespace pagewise
