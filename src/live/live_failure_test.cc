// Live snapshot failure tests: image I/O errors (ENOSPC, EIO) injected at
// random points, and kernel call failures on the userfaultfd, while writer
// threads run. Every case must end with a clear error, no protection left,
// every writer released (the joins complete) and no file left behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <random>

#include "live/live_env.h"
#include "live/live_test_harness.h"
#include "pagewise/live.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::live {
namespace {

using pagewise::testing::Fault;
using pagewise::testing::FaultEnv;
using pagewise::testing::FillPage;
using pagewise::testing::Mapping;
using pagewise::testing::MemKind;
using pagewise::testing::Op;
using pagewise::testing::TempDir;
using testing::CompareImage;
using testing::WriterPool;

constexpr size_t kMiB = 1 << 20;
const size_t kPage = static_cast<size_t>(getpagesize());

Region TestRegion(const Mapping& m, RegionKind kind) {
  Region r;
  r.address = m.addr();
  r.length = m.size();
  r.page_size = static_cast<uint32_t>(kPage);
  r.prot = PROT_READ | PROT_WRITE;
  r.kind = kind;
  r.name = "heap";
  return r;
}

size_t WriteProtectedPages(uint64_t addr, size_t len) {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return SIZE_MAX;
  std::vector<uint64_t> e(len / kPage);
  ssize_t n = pread(fd, e.data(), e.size() * 8, static_cast<off_t>(addr / kPage * 8));
  close(fd);
  if (n != static_cast<ssize_t>(e.size() * 8)) return SIZE_MAX;
  size_t wp = 0;
  for (uint64_t v : e) wp += (v >> 57) & 1;
  return wp;
}

// Runs one live snapshot of `m` with writers running, the image written
// through `image_env` and the kernel calls through `env`. Returns Wait()'s
// status (or Start()'s). Afterwards the writers have been joined.
Status SnapshotWithWriters(const Mapping& m, RegionKind kind, const std::string& path,
                           Env* image_env, Env* env, uint64_t seed) {
  WriterPool writers(m.data(), m.size(), 2, seed);
  writers.Start();
  writers.WaitForBatches(8);
  LiveSnapshotOptions o;
  o.image.chunk_bytes = 16 * 1024;  // many chunk writes: many points to fail at
  o.fault_queue_pages = 16;
  if (env == nullptr) env = Env::Default();
  if (image_env == nullptr) image_env = env;
  Result<std::unique_ptr<LiveSnapshot>> snap =
      StartLiveSnapshot(path, {TestRegion(m, kind)}, o, env, image_env);
  Status s = snap.ok() ? (*snap)->Wait() : snap.status();
  // Joining proves that no writer stayed blocked on a protected page.
  writers.WaitForBatches(writers.writes() / 32 + 4);
  writers.Stop();
  return s;
}

void ExpectReleased(const Mapping& m, const TempDir& dir) {
  EXPECT_EQ(WriteProtectedPages(m.addr(), m.size()), 0u) << "write protection left behind";
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "a (temporary) image was left behind";
  // Every page can be written by this thread without blocking.
  for (size_t i = 0; i < m.size() / kPage; ++i) m.page(i)[8] ^= 1;
}

TEST(LiveSnapshotFailure, ImageWriteErrorsAtRandomPointsReleaseWriters) {
  TempDir dir;
  Mapping m(16 * kMiB, MemKind::kAnonPrivate);
  for (size_t i = 0; i < m.size() / kPage; ++i) FillPage(m.page(i), 3, i);
  // Calibrate: how many pwrite calls does a whole snapshot make?
  FaultEnv counting;
  ASSERT_TRUE(
      SnapshotWithWriters(m, RegionKind::kAnonymous, dir.File("ok.pwi"), &counting, nullptr, 1)
          .ok());
  std::filesystem::remove(dir.File("ok.pwi"));
  const int calls = counting.Calls(Op::kPwrite);
  ASSERT_GT(calls, 10);

  std::mt19937 rng(12345);
  for (int it = 0; it < 8; ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    FaultEnv fenv;
    const bool eio = it % 4 == 3;
    Fault f;
    f.error = eio ? EIO : ENOSPC;
    f.skip = static_cast<int>(rng() % static_cast<unsigned>(calls * 9 / 10));
    f.count = eio ? 1 : -1;                    // a full disk stays full; EIO once
    f.partial_bytes = it % 2 == 0 ? 1000 : 0;  // sometimes a short write first
    fenv.Inject(Op::kPwrite, f);
    const std::string path = dir.File("fail.pwi");
    Status s = SnapshotWithWriters(m, RegionKind::kAnonymous, path, &fenv, nullptr,
                                   static_cast<uint64_t>(it) + 2);
    ASSERT_FALSE(s.ok()) << "pwrite fault at call " << f.skip << " did not fail the snapshot";
    EXPECT_GE(fenv.Fired(Op::kPwrite), 1);
    EXPECT_EQ(s.code(), eio ? Code::kIoError : Code::kNoSpace) << s.ToString();
    EXPECT_NE(s.message().find("live snapshot to " + path + " failed"), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("writers released, no image was written"), std::string::npos)
        << s.message();
    ExpectReleased(m, dir);
  }
}

TEST(LiveSnapshotFailure, CommitErrorsLeaveNoImage) {
  TempDir dir;
  Mapping m(8 * kMiB, MemKind::kMemfdShared);
  for (size_t i = 0; i < m.size() / kPage; ++i) FillPage(m.page(i), 4, i);
  for (Op op : {Op::kFsync, Op::kRename}) {
    FaultEnv fenv;
    fenv.Inject(op, Fault{EIO, 0, 0, 1});
    Status s = SnapshotWithWriters(m, RegionKind::kShared, dir.File("c.pwi"), &fenv, nullptr, 5);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Code::kIoError) << s.ToString();
    EXPECT_NE(s.message().find("committing the image"), std::string::npos) << s.message();
    ExpectReleased(m, dir);
  }
}

// Kernel-side failures on our userfaultfd: during Start (registering,
// protecting the second region) and while faults are served (clearing
// protection after a save, reading fault messages).
TEST(LiveSnapshotFailure, UserfaultfdErrorsReleaseWriters) {
  TempDir dir;
  Mapping a(8 * kMiB, MemKind::kAnonPrivate), b(8 * kMiB, MemKind::kAnonPrivate);
  for (size_t i = 0; i < a.size() / kPage; ++i) FillPage(a.page(i), 6, i);
  struct Case {
    Op op;
    Fault fault;
    const char* expect;
    const char* or_expect;  // the writers race Start: a fault may come first
  };
  const Case cases[] = {
      {Op::kUffdRegister, Fault{ENOMEM, 0, 1, 1}, "registering region", nullptr},
      // The second call protects the second region, unless a writer faulted
      // on the first one in between and the fault path's unprotect came first.
      {Op::kUffdWriteProtect, Fault{EIO, 0, 1, 1}, "write-protecting region",
       "clearing write protection"},
      // Calls 0-1 protect the regions; later ones clear protection after a
      // save (saver chunks or fault path).
      {Op::kUffdWriteProtect, Fault{EIO, 0, 10, 1}, "clearing write protection", nullptr},
      // The writers run through T, so fault messages arrive at once.
      {Op::kUffdRead, Fault{EIO, 0, 0, 1}, "reading write-protect faults", nullptr},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("op " + std::to_string(static_cast<int>(c.op)));
    FaultEnv fenv;
    fenv.Inject(c.op, c.fault);
    WriterPool wa(a.data(), a.size(), 1, 7), wb(b.data(), b.size(), 1, 8);
    wa.Start();
    wb.Start();
    wa.WaitForBatches(4);
    wb.WaitForBatches(4);
    LiveSnapshotOptions o;
    Result<std::unique_ptr<LiveSnapshot>> snap = StartLiveSnapshot(
        dir.File("u.pwi"),
        {TestRegion(a, RegionKind::kAnonymous), TestRegion(b, RegionKind::kAnonymous)}, o, &fenv,
        Env::Default());
    Status s = snap.ok() ? (*snap)->Wait() : snap.status();
    wa.Stop();
    wb.Stop();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(fenv.Fired(c.op), 1);
    EXPECT_TRUE(s.message().find(c.expect) != std::string::npos ||
                (c.or_expect != nullptr && s.message().find(c.or_expect) != std::string::npos))
        << s.ToString();
    ExpectReleased(a, dir);
    ExpectReleased(b, dir);
  }
}

}  // namespace
}  // namespace pagewise::live
