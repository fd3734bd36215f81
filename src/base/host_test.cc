// pagewise/host.h: mappings (anonymous and memfd, aligned, advised) are
// owned exactly once and leave nothing behind after an error; temporary
// directories remove themselves with their contents (links unfollowed)
// unless kept; IsTerminal tells pipes and closed descriptors from
// terminals; RunProgram captures output and exit status.
#include "pagewise/host.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "base/host_env.h"
#include "testing/fault_env.h"

namespace pagewise {
namespace {

using testing::Fault;
using testing::FaultEnv;
using testing::Op;

// True if every page of [p, p+len) is mapped (mincore fails with ENOMEM on
// an unmapped page).
bool Mapped(const void* p, size_t len) {
  std::vector<unsigned char> v(len / PageSize());
  return mincore(const_cast<void*>(p), len, v.data()) == 0;
}

bool FdOpen(int fd) { return fcntl(fd, F_GETFD) != -1; }

size_t OpenFds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

TEST(MemoryMapping, AnonymousIsZeroedWritableAlignedAndUnmappedOnDestruction) {
  const size_t len = 64 * PageSize();
  char* p = nullptr;
  {
    MapOptions o;
    o.alignment = 2 << 20;
    o.huge_pages = HugePages::kNever;
    Result<MemoryMapping> m = MemoryMapping::Anonymous(len, o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    p = m->data();
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(m->size(), len);
    EXPECT_EQ(m->memfd(), -1);
    EXPECT_EQ(m->kind(), RegionKind::kAnonymous);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (2 << 20), 0u);
    for (size_t i = 0; i < len; i += PageSize()) ASSERT_EQ(p[i], 0);
    std::memset(p, 0x5a, len);
    const Region r = m->AsRegion("heap");
    EXPECT_EQ(r.address, reinterpret_cast<uint64_t>(p));
    EXPECT_EQ(r.length, len);
    EXPECT_EQ(r.page_size, PageSize());
    EXPECT_EQ(r.prot, static_cast<uint32_t>(PROT_READ | PROT_WRITE));
    EXPECT_EQ(r.kind, RegionKind::kAnonymous);
    EXPECT_EQ(r.name, "heap");
    EXPECT_TRUE(Mapped(p, len));
    // The alignment's reservation is trimmed: nothing stays mapped around it.
    EXPECT_FALSE(Mapped(p - PageSize(), PageSize()));
    EXPECT_FALSE(Mapped(p + len, PageSize()));
  }
  EXPECT_FALSE(Mapped(p, PageSize()));
}

TEST(MemoryMapping, MemfdIsSharedWithItsDescriptorAndBothGoTogether) {
  const size_t len = 16 * PageSize();
  int fd = -1;
  {
    Result<MemoryMapping> m = MemoryMapping::Memfd(len, "pagewise-host-test");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    fd = m->memfd();
    ASSERT_GE(fd, 0);
    EXPECT_EQ(m->kind(), RegionKind::kShared);
    EXPECT_EQ(m->AsRegion().kind, RegionKind::kShared);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    EXPECT_EQ(static_cast<size_t>(st.st_size), len);
    m->data()[3 * PageSize()] = 'w';  // a MAP_SHARED write reaches the file
    char c = 0;
    ASSERT_EQ(pread(fd, &c, 1, static_cast<off_t>(3 * PageSize())), 1);
    EXPECT_EQ(c, 'w');
  }
  EXPECT_FALSE(FdOpen(fd));
}

TEST(MemoryMapping, BadShapesAreRefused) {
  auto refused = [](const Result<MemoryMapping>& m) {
    return !m.ok() && m.status().code() == Code::kInvalidArgument;
  };
  MapOptions odd;
  odd.alignment = 3 * PageSize();
  EXPECT_TRUE(refused(MemoryMapping::Anonymous(0)));
  EXPECT_TRUE(refused(MemoryMapping::Anonymous(PageSize() + 1)));
  EXPECT_TRUE(refused(MemoryMapping::Anonymous(PageSize(), odd)));
  EXPECT_TRUE(refused(MemoryMapping::Memfd(0, "x")));
}

TEST(MemoryMapping, MoveTransfersOwnershipAndReleaseGivesItAway) {
  const size_t len = 4 * PageSize();
  Result<MemoryMapping> a = MemoryMapping::Anonymous(len);
  Result<MemoryMapping> b = MemoryMapping::Anonymous(len);
  ASSERT_TRUE(a.ok() && b.ok());
  char* pa = a->data();
  char* pb = b->data();
  MemoryMapping moved(std::move(*a));
  EXPECT_TRUE(a->empty());
  EXPECT_EQ(a->size(), 0u);
  EXPECT_EQ(moved.data(), pa);
  moved = std::move(*b);  // the old memory of `moved` is unmapped
  EXPECT_FALSE(Mapped(pa, len));
  EXPECT_EQ(moved.data(), pb);
  moved.Release();
  EXPECT_TRUE(moved.empty());
  EXPECT_TRUE(Mapped(pb, len));
  MemoryMapping adopted = MemoryMapping::Adopt(pb, len);
  EXPECT_TRUE(adopted.Unmap().ok());
  EXPECT_TRUE(adopted.empty());
  EXPECT_FALSE(Mapped(pb, len));
  EXPECT_TRUE(adopted.Unmap().ok());  // empty: a no-op
}

TEST(MemoryMapping, FailuresLeaveNothingMappedOrOpen) {
  const size_t len = 8 * PageSize();
  {
    FaultEnv env;
    env.Inject(Op::kMmap, Fault{ENOMEM});
    Result<MemoryMapping> m = MapAnonymous(&env, len, {});
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), Code::kResourceExhausted) << m.status().ToString();
    EXPECT_NE(m.status().message().find("mapping of"), std::string::npos);
  }
  {
    // The aligned path: the reservation succeeds, the mapping over it fails
    // and the reservation goes back.
    FaultEnv env;
    MapOptions aligned;
    aligned.alignment = 2 << 20;
    env.Inject(Op::kMmap, Fault{ENOMEM, 0, /*skip=*/1});
    Result<MemoryMapping> m = MapAnonymous(&env, len, aligned);
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(env.Calls(Op::kMmap), 2);
    EXPECT_EQ(env.Fired(Op::kMmap), 1);
    EXPECT_GE(env.Calls(Op::kMunmap), 1);
  }
  const size_t fds = OpenFds();
  {
    FaultEnv env;
    env.Inject(Op::kFtruncate, Fault{ENOSPC});
    Result<MemoryMapping> m = MapMemfd(&env, len, "pagewise-host-test", {});
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find("sizing memfd"), std::string::npos)
        << m.status().ToString();
    EXPECT_EQ(OpenFds(), fds);
  }
  {
    FaultEnv env;
    env.Inject(Op::kMmap, Fault{ENOMEM});
    Result<MemoryMapping> m = MapMemfd(&env, len, "pagewise-host-test", {});
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(OpenFds(), fds);
  }
  {
    // Refused advice is a hint, not an error.
    FaultEnv env;
    env.Inject(Op::kMadvise, Fault{EINVAL});
    MapOptions never;
    never.huge_pages = HugePages::kNever;
    Result<MemoryMapping> m = MapAnonymous(&env, len, never);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(env.Fired(Op::kMadvise), 1);
  }
}

TEST(TempDirectory, IsPrivateAndRemovedWithItsContentsLinksUnfollowed) {
  char outside_tmpl[] = "/tmp/pagewise-host-outside-XXXXXX";
  ASSERT_NE(mkdtemp(outside_tmpl), nullptr);
  const std::string outside = std::string(outside_tmpl) + "/keep";
  std::ofstream(outside) << "x";
  std::string path;
  {
    Result<TempDirectory> d = TempDirectory::Create("/tmp/pagewise-host-test-");
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    path = d->path();
    ASSERT_EQ(path.rfind("/tmp/pagewise-host-test-", 0), 0u);
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    ASSERT_EQ(mkdir(d->File("sub").c_str(), 0700), 0);
    std::ofstream(d->File("sub/f")) << "data";
    ASSERT_EQ(symlink(std::string(outside_tmpl).c_str(), d->File("link").c_str()), 0);
  }
  EXPECT_FALSE(Exists(path));
  EXPECT_TRUE(Exists(outside)) << "removal followed a symbolic link";
  unlink(outside.c_str());
  rmdir(outside_tmpl);
}

TEST(TempDirectory, KeepMoveAndRemove) {
  Result<TempDirectory> d = TempDirectory::Create("/tmp/pagewise-host-test-");
  ASSERT_TRUE(d.ok());
  const std::string path = d->path();
  {
    TempDirectory moved(std::move(*d));
    EXPECT_TRUE(d->path().empty());
    moved.Keep();
    EXPECT_TRUE(moved.kept());
  }
  EXPECT_TRUE(Exists(path));  // kept
  rmdir(path.c_str());

  Result<TempDirectory> e = TempDirectory::Create("/tmp/pagewise-host-test-");
  ASSERT_TRUE(e.ok());
  const std::string epath = e->path();
  e->Keep();
  ASSERT_TRUE(e->Remove().ok());  // even when kept
  EXPECT_TRUE(e->path().empty());
  EXPECT_FALSE(Exists(epath));
  EXPECT_TRUE(e->Remove().ok());  // empty: a no-op
}

TEST(TempDirectory, MissingParentIsNotFound) {
  Result<TempDirectory> d = TempDirectory::Create("/nonexistent-pagewise-dir/t-");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kNotFound) << d.status().ToString();
  EXPECT_NE(d.status().message().find("/nonexistent-pagewise-dir/t-"), std::string::npos);
}

TEST(IsTerminal, PipesFilesAndClosedDescriptorsAreNot) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_FALSE(IsTerminal(p[0]));
  EXPECT_FALSE(IsTerminal(p[1]));
  close(p[0]);
  close(p[1]);
  EXPECT_FALSE(IsTerminal(p[0]));
  EXPECT_FALSE(IsTerminal(-1));
  const int tty = open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (tty >= 0) {  // only with a controlling terminal (not under ctest)
    EXPECT_TRUE(IsTerminal(tty));
    close(tty);
  }
}

TEST(RunProgram, CapturesStdoutAndExitStatus) {
  Result<ProgramOutput> r = RunProgram("/bin/sh", {"-c", "echo one; echo two; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_text, "one\ntwo\n");
  EXPECT_EQ(r->exit_status, 3);
  r = RunProgram("/bin/sh", {"-c", "kill -9 $$"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_status, 128 + 9);
  r = RunProgram("/nonexistent/pagewise-program", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/pagewise-program"), std::string::npos);
}

}  // namespace
}  // namespace pagewise
