// DiskCache: complete entries only, damaged entries dropped, claims that
// exclude other openers (another process's open file description) and die
// with them, LRU eviction to the bound, stale temporary files removed.
#include "remote/disk_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "image/format.h"
#include "testing/test_util.h"

namespace pagewise::remote {
namespace {

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

uint64_t Sum(const std::vector<uint8_t>& v) { return image::Checksum64(v.data(), v.size()); }

TEST(DiskCacheTest, PutGetAndDamagedEntriesAreDropped) {
  testing::TempDir dir;
  Result<std::shared_ptr<DiskCache>> c = DiskCache::Open(dir.path(), 1 << 30);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const std::vector<uint8_t> data = Bytes(5000, 1);
  std::vector<uint8_t> out(data.size());
  bool damaged = true;
  Result<bool> hit = (*c)->Get("s3-abc", out.data(), out.size(), Sum(data), &damaged);
  ASSERT_TRUE(hit.ok());
  EXPECT_FALSE(*hit);
  EXPECT_FALSE(damaged);
  ASSERT_TRUE((*c)->Put("s3-abc", data.data(), data.size()).ok());
  hit = (*c)->Get("s3-abc", out.data(), out.size(), Sum(data), &damaged);
  ASSERT_TRUE(hit.ok() && *hit);
  EXPECT_EQ(out, data);
  // Nothing but the entry: no temporary file is left behind.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path() + "/v1/tmp"));
  // Damage a byte: the entry is dropped, not served.
  const std::string path = (*c)->EntryPath("s3-abc");
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\xff');
  }
  hit = (*c)->Get("s3-abc", out.data(), out.size(), Sum(data), &damaged);
  ASSERT_TRUE(hit.ok());
  EXPECT_FALSE(*hit);
  EXPECT_TRUE(damaged);
  EXPECT_FALSE(std::filesystem::exists(path));
  // A truncated entry too.
  ASSERT_TRUE((*c)->Put("s3-abc", data.data(), data.size() - 1).ok());
  hit = (*c)->Get("s3-abc", out.data(), out.size(), Sum(data), &damaged);
  EXPECT_TRUE(hit.ok() && !*hit && damaged);
  EXPECT_FALSE((*c)->Put("../evil", data.data(), 10).ok());
}

TEST(DiskCacheTest, ClaimsExcludeOtherOpenersAndDieWithThem) {
  testing::TempDir dir;
  auto a = DiskCache::Open(dir.path(), 1 << 30);
  auto b = DiskCache::Open(dir.path(), 1 << 30);  // another open file description
  ASSERT_TRUE(a.ok() && b.ok());
  Result<bool> ca = (*a)->TryClaim("s3-k1");
  ASSERT_TRUE(ca.ok() && *ca);
  Result<bool> cb = (*b)->TryClaim("s3-k1");
  ASSERT_TRUE(cb.ok());
  EXPECT_FALSE(*cb) << "a claim held by another opener";
  cb = (*b)->TryClaim("s3-k2");
  EXPECT_TRUE(cb.ok() && *cb) << "other keys are free";
  (*a)->Release("s3-k1");
  cb = (*b)->TryClaim("s3-k1");
  EXPECT_TRUE(cb.ok() && *cb);
  (*b)->Release("s3-k1");
  // A child process that claims and dies without releasing frees the claim.
  int up[2], down[2];  // child -> parent: claimed; parent -> child: die now
  ASSERT_EQ(pipe(up), 0);
  ASSERT_EQ(pipe(down), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(up[0]);
    close(down[1]);
    auto c = DiskCache::Open(dir.path(), 1 << 30);
    Result<bool> claimed = c.ok() ? (*c)->TryClaim("s3-k3") : Result<bool>(false);
    char ok = claimed.ok() && *claimed ? 1 : 0;
    if (write(up[1], &ok, 1) != 1) _exit(2);
    char wait;
    if (read(down[0], &wait, 1) < 0) _exit(3);  // EOF: the parent is done; die holding it
    _exit(0);
  }
  close(up[1]);
  close(down[0]);
  char ok = 0;
  ASSERT_EQ(read(up[0], &ok, 1), 1);
  ASSERT_EQ(ok, 1);
  cb = (*b)->TryClaim("s3-k3");
  EXPECT_TRUE(cb.ok() && !*cb) << "the child holds it";
  close(down[1]);
  close(up[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  cb = (*b)->TryClaim("s3-k3");
  EXPECT_TRUE(cb.ok() && *cb) << "a dead process's claim is gone";
}

TEST(DiskCacheTest, EvictsLeastRecentlyUsedToTheBound) {
  testing::TempDir dir;
  auto c = DiskCache::Open(dir.path(), 100000);
  ASSERT_TRUE(c.ok());
  const std::vector<uint8_t> data = Bytes(30000, 2);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*c)->Put("s3-e" + std::to_string(i), data.data(), data.size()).ok());
    // Distinct, increasing modification times (entry i is older than i+1).
    struct timespec ts[2] = {{1000 + i, 0}, {1000 + i, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, (*c)->EntryPath("s3-e" + std::to_string(i)).c_str(), ts, 0), 0);
  }
  ASSERT_TRUE((*c)->Put("s3-e3", data.data(), data.size()).ok());  // 120000 > 100000
  EXPECT_LE((*c)->approx_bytes(), 80000u);
  EXPECT_FALSE(std::filesystem::exists((*c)->EntryPath("s3-e0")));
  EXPECT_FALSE(std::filesystem::exists((*c)->EntryPath("s3-e1")));
  EXPECT_TRUE(std::filesystem::exists((*c)->EntryPath("s3-e2")));
  EXPECT_TRUE(std::filesystem::exists((*c)->EntryPath("s3-e3")));
  EXPECT_EQ((*c)->stats().evicted, 2u);
}

TEST(DiskCacheTest, StaleTemporaryFilesAreRemovedAtOpen) {
  testing::TempDir dir;
  ASSERT_TRUE(DiskCache::Open(dir.path(), 1 << 20).ok());
  const std::string old_tmp = dir.path() + "/v1/tmp/s3-x.123";
  const std::string new_tmp = dir.path() + "/v1/tmp/s3-y.456";
  std::ofstream(old_tmp) << "partial";
  std::ofstream(new_tmp) << "in progress";
  struct timespec ts[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, old_tmp.c_str(), ts, 0), 0);
  ASSERT_TRUE(DiskCache::Open(dir.path(), 1 << 20).ok());
  EXPECT_FALSE(std::filesystem::exists(old_tmp));
  EXPECT_TRUE(std::filesystem::exists(new_tmp)) << "a live writer's file stays";
}

}  // namespace
}  // namespace pagewise::remote
