// What a program gets from libc with and without libpagewise-interpose.
//
// One program, built and run four ways (cmake/PackagingTests.cmake):
//   interpose.static_off   linked with libpagewise.a only
//   interpose.shared_off   linked with libpagewise.so only
//   interpose.static_on    libpagewise.a + libpagewise-interpose.a
//   interpose.preload_on   the shared_off binary under LD_PRELOAD=libpagewise-interpose.so
// PAGEWISE_EXPECT_INTERPOSERS=1|0 tells which. Off: madvise, mprotect, mremap
// and every read-family name resolve to libc, the mprotect backend is
// unavailable with a reason naming the library, and asking for it is
// kNotSupported. On: the names resolve to pagewise's interposers, and the
// mprotect backend tracks writes, the kernel's too (a read() into a tracked
// page), which only works through the interposed read.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "pagewise/probe.h"
#include "pagewise/tracker.h"

namespace pagewise {
namespace {

const char* const kInterposed[] = {
    "madvise",     "mprotect",      "mremap",     "read",           "pread",
    "pread64",     "readv",         "preadv",     "preadv64",       "preadv2",
    "preadv64v2",  "recv",          "recvfrom",   "recvmsg",        "__read_chk",
    "__pread_chk", "__pread64_chk", "__recv_chk", "__recvfrom_chk",
};

bool ExpectInterposers() {
  const char* e = std::getenv("PAGEWISE_EXPECT_INTERPOSERS");
  if (e == nullptr) {
    ADD_FAILURE() << "PAGEWISE_EXPECT_INTERPOSERS is not set (run through ctest)";
    return false;
  }
  return std::strcmp(e, "1") == 0;
}

// The object that defines the symbol a call through the libc name reaches.
std::string DefiningObject(const char* name) {
  void* p = dlsym(RTLD_DEFAULT, name);
  if (p == nullptr) return "(undefined)";
  Dl_info info;
  if (dladdr(p, &info) == 0 || info.dli_fname == nullptr) return "(unknown)";
  return info.dli_fname;
}

bool IsLibc(const std::string& object) { return object.find("/libc.so") != std::string::npos; }

TEST(Interpose, LibcNamesResolveAsExpected) {
  const bool on = ExpectInterposers();
  for (const char* name : kInterposed) {
    const std::string obj = DefiningObject(name);
    if (on) {
      EXPECT_FALSE(IsLibc(obj)) << name << " should be pagewise's interposer, is in " << obj;
    } else {
      EXPECT_TRUE(IsLibc(obj)) << name << " should be libc's, is in " << obj;
    }
  }
  // What this program's own calls reach: the address its code takes.
  Dl_info info;
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&::read), &info), 0);
  EXPECT_EQ(IsLibc(info.dli_fname), !on) << "read() reaches " << info.dli_fname;
}

TEST(Interpose, MprotectBackendAvailability) {
  const bool on = ExpectInterposers();
  bool found = false;
  for (const BackendInfo& b : DescribeBackends(Features())) {
    if (b.name != "mprotect") continue;
    found = true;
    EXPECT_EQ(b.available, on) << b.reason;
    if (!on) {
      EXPECT_NE(b.reason.find("libpagewise-interpose"), std::string::npos) << b.reason;
    }
  }
  EXPECT_TRUE(found);

  Result<std::unique_ptr<Tracker>> t = Tracker::Create({.backend = TrackBackend::kMprotect});
  if (!on) {
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), Code::kNotSupported);
    EXPECT_NE(t.status().message().find("libpagewise-interpose"), std::string::npos)
        << t.status().ToString();
    return;
  }
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  // A write by the kernel (read() from a pipe) into a tracked page succeeds
  // and is reported: only the interposed read makes the page writable first.
  const size_t pg = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  ASSERT_TRUE((*t)->Track(mem, 4 * pg).ok());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ASSERT_EQ(write(fds[1], "pagewise", 8), 8);
  char* dst = static_cast<char*>(mem) + 2 * pg + 100;
  EXPECT_EQ(read(fds[0], dst, 8), 8) << std::strerror(errno);
  EXPECT_EQ(std::memcmp(dst, "pagewise", 8), 0);
  std::vector<PageRange> written;
  ASSERT_TRUE((*t)->Collect(&written).ok());
  const uint64_t page2 = reinterpret_cast<uint64_t>(mem) + 2 * pg;
  EXPECT_EQ(written, (std::vector<PageRange>{{page2, page2 + pg}}));
  close(fds[0]);
  close(fds[1]);
  t->reset();
  munmap(mem, 4 * pg);
}

TEST(Interpose, AutoNeverPicksAnUnlinkedBackend) {
  const bool on = ExpectInterposers();
  Result<std::unique_ptr<Tracker>> t = Tracker::Create();
  if (!t.ok()) {
    // Only possible without any userfaultfd backend and without the
    // interposers: the error names why each one is unavailable.
    EXPECT_FALSE(on);
    EXPECT_EQ(t.status().code(), Code::kNotSupported);
    EXPECT_NE(t.status().message().find("libpagewise-interpose"), std::string::npos);
    return;
  }
  if (!on) {
    EXPECT_NE((*t)->backend(), TrackBackend::kMprotect);
  }
}

}  // namespace
}  // namespace pagewise
