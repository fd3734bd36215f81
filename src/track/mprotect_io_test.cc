// mprotect backend: system calls that write into tracked memory (the
// interposed read family, src/track/kernel_writes.h). Without the
// interposers each of these calls fails with EFAULT on an unwritten tracked
// page, because the kernel's copy into a PROT_READ page raises no SIGSEGV.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/tracker.h"
#include "testing/test_util.h"
#include "track/kernel_writes.h"
#include "track/track_test_util.h"

namespace pagewise::testing {
namespace {

class Pipe {
 public:
  Pipe() { EXPECT_EQ(pipe2(fds_, O_CLOEXEC), 0) << strerror(errno); }
  ~Pipe() {
    close(fds_[0]);
    close(fds_[1]);
  }
  int r() const { return fds_[0]; }
  int w() const { return fds_[1]; }
  void Put(const std::string& s) const {
    ASSERT_EQ(write(w(), s.data(), s.size()), static_cast<ssize_t>(s.size())) << strerror(errno);
  }

 private:
  int fds_[2] = {-1, -1};
};

class SocketPair {
 public:
  explicit SocketPair(int type) {
    EXPECT_EQ(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds_), 0) << strerror(errno);
  }
  ~SocketPair() {
    close(fds_[0]);
    close(fds_[1]);
  }
  int a() const { return fds_[0]; }
  int b() const { return fds_[1]; }

 private:
  int fds_[2] = {-1, -1};
};

std::string Pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7);
  return s;
}

// A tracker tracking `m`, with the first collect done (nothing written).
std::unique_ptr<Tracker> TrackAll(const Mapping& m) {
  std::unique_ptr<Tracker> t = MakeTracker(TrackBackend::kMprotect);
  if (t == nullptr) return nullptr;
  EXPECT_TRUE(t->Track(m.data(), m.size()).ok());
  EXPECT_EQ(CollectPages(t.get(), m.data(), m.size() / Pg()), std::set<size_t>{});
  return t;
}

TEST(MprotectKernelWrites, ReadFromPipeSpanningTwoPages) {
  Mapping m(8 * Pg());
  std::unique_ptr<Tracker> t = TrackAll(m);
  ASSERT_NE(t, nullptr);
  Pipe p;
  const std::string data = Pattern(200, 'a');
  p.Put(data);
  char* dst = m.page(3) - 100;  // pages 2 and 3
  ASSERT_EQ(read(p.r(), dst, data.size()), static_cast<ssize_t>(data.size())) << strerror(errno);
  EXPECT_EQ(std::string(dst, data.size()), data);
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{2, 3}));
  // Re-armed by that collect: a second read is opened and reported again.
  p.Put(data);
  ASSERT_EQ(read(p.r(), m.page(6), data.size()), static_cast<ssize_t>(data.size()));
  EXPECT_EQ(std::string(m.page(6), data.size()), data);
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{6}));
  EXPECT_GE(t->stats().faults_handled, 3u);
}

TEST(MprotectKernelWrites, PreadAndPreadv2FromAFile) {
  Mapping m(8 * Pg());
  std::unique_ptr<Tracker> t = TrackAll(m);
  ASSERT_NE(t, nullptr);
  TempDir dir;
  const std::string path = dir.File("f");
  const std::string data = Pattern(3 * Pg(), 'q');
  {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    close(fd);
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pread(fd, m.page(1), 2 * Pg(), Pg()), static_cast<ssize_t>(2 * Pg()));
  EXPECT_EQ(std::string(m.page(1), 2 * Pg()), data.substr(Pg(), 2 * Pg()));
  struct iovec iov[2] = {{m.page(5), 16}, {m.page(7) + 8, 16}};
  ASSERT_EQ(preadv2(fd, iov, 2, 0, 0), 32);
  EXPECT_EQ(std::string(m.page(5), 16), data.substr(0, 16));
  EXPECT_EQ(std::string(m.page(7) + 8, 16), data.substr(16, 16));
  close(fd);
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{1, 2, 5, 7}));
}

TEST(MprotectKernelWrites, ReadvScattersIntoTrackedAndUntrackedMemory) {
  Mapping m(8 * Pg()), untracked(2 * Pg());
  std::unique_ptr<Tracker> t = TrackAll(m);
  ASSERT_NE(t, nullptr);
  Pipe p;
  const std::string data = Pattern(96, 'r');
  p.Put(data);
  struct iovec iov[3] = {{m.page(1), 32}, {untracked.data(), 32}, {m.page(6) + 40, 32}};
  ASSERT_EQ(readv(p.r(), iov, 3), 96) << strerror(errno);
  EXPECT_EQ(std::string(m.page(1), 32), data.substr(0, 32));
  EXPECT_EQ(std::string(untracked.data(), 32), data.substr(32, 32));
  EXPECT_EQ(std::string(m.page(6) + 40, 32), data.substr(64, 32));
  std::vector<PageRange> outside;
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8, &outside), (std::set<size_t>{1, 6}));
  EXPECT_TRUE(outside.empty());
}

TEST(MprotectKernelWrites, ReadIntoUntrackedMemoryIsUnaffected) {
  Mapping m(4 * Pg()), untracked(2 * Pg());
  std::unique_ptr<Tracker> t = TrackAll(m);
  ASSERT_NE(t, nullptr);
  const uint64_t faults = t->stats().faults_handled;
  Pipe p;
  const std::string data = Pattern(64, 'u');
  p.Put(data);
  ASSERT_EQ(read(p.r(), untracked.page(1), data.size()), static_cast<ssize_t>(data.size()));
  EXPECT_EQ(std::string(untracked.page(1), data.size()), data);
  EXPECT_EQ(t->stats().faults_handled, faults);  // nothing of ours was touched
  std::vector<PageRange> outside;
  EXPECT_EQ(CollectPages(t.get(), m.data(), 4, &outside), std::set<size_t>{});
  EXPECT_TRUE(outside.empty());
}

TEST(MprotectKernelWrites, RecvAndRecvfromOnSockets) {
  Mapping m(8 * Pg());
  std::unique_ptr<Tracker> t = TrackAll(m);
  ASSERT_NE(t, nullptr);
  {
    SocketPair s(SOCK_STREAM);
    const std::string data = Pattern(100, 's');
    ASSERT_EQ(send(s.a(), data.data(), data.size(), 0), 100);
    ASSERT_EQ(recv(s.b(), m.page(2) + 10, 100, 0), 100) << strerror(errno);
    EXPECT_EQ(std::string(m.page(2) + 10, 100), data);
  }
  {
    // A datagram, its sender's address and the address length all land in
    // tracked pages. The sender autobinds to an abstract name (binding with
    // only the family), so the kernel has an address to write.
    SocketPair s(SOCK_DGRAM);
    struct sockaddr_un self = {};
    self.sun_family = AF_UNIX;
    ASSERT_EQ(bind(s.a(), reinterpret_cast<struct sockaddr*>(&self), sizeof(sa_family_t)), 0)
        << strerror(errno);
    const std::string data = Pattern(50, 'd');
    ASSERT_EQ(send(s.a(), data.data(), data.size(), 0), 50);
    auto* addrlen = reinterpret_cast<socklen_t*>(m.page(5));
    *addrlen = sizeof(struct sockaddr_storage);  // a program write: page 5 is written anyway
    ASSERT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{2, 5}));
    auto* addr = reinterpret_cast<struct sockaddr*>(m.page(6));
    ASSERT_EQ(recvfrom(s.b(), m.page(4), 50, 0, addr, addrlen), 50) << strerror(errno);
    EXPECT_EQ(std::string(m.page(4), 50), data);
    EXPECT_GT(*addrlen, sizeof(sa_family_t));
    EXPECT_EQ(addr->sa_family, AF_UNIX);
  }
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{4, 5, 6}));
}

TEST(MprotectKernelWrites, RecvmsgWithHeaderPayloadAndPassedFdInTrackedPages) {
  Mapping m(8 * Pg());
  std::unique_ptr<Tracker> t = TrackAll(m);
  ASSERT_NE(t, nullptr);
  SocketPair s(SOCK_STREAM);
  Pipe passed;
  // Send 64 bytes and the pipe's write end.
  const std::string data = Pattern(64, 'm');
  {
    struct iovec iov = {const_cast<char*>(data.data()), data.size()};
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    const int fd = passed.w();
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ASSERT_EQ(sendmsg(s.a(), &msg, 0), 64) << strerror(errno);
  }
  // The program prepares its msghdr (page 1, written by the program: it is
  // reported anyway) and collects; the kernel then writes the header back
  // (page 1), the payload (page 3) and the control data (page 5).
  auto* msg = reinterpret_cast<struct msghdr*>(m.page(1));
  auto* iov = reinterpret_cast<struct iovec*>(m.page(1) + 256);
  *iov = {m.page(3), 64};
  *msg = {};
  msg->msg_iov = iov;
  msg->msg_iovlen = 1;
  msg->msg_control = m.page(5);
  msg->msg_controllen = CMSG_SPACE(sizeof(int));
  ASSERT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{1}));
  ASSERT_EQ(recvmsg(s.b(), msg, MSG_CMSG_CLOEXEC), 64) << strerror(errno);
  EXPECT_EQ(std::string(m.page(3), 64), data);
  struct cmsghdr* c = CMSG_FIRSTHDR(msg);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->cmsg_type, SCM_RIGHTS);
  int got = -1;
  memcpy(&got, CMSG_DATA(c), sizeof got);
  ASSERT_GE(got, 0);
  EXPECT_EQ(write(got, "x", 1), 1);  // the passed fd is the pipe's write end
  char x = 0;
  EXPECT_EQ(read(passed.r(), &x, 1), 1);
  EXPECT_EQ(x, 'x');
  close(got);
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), (std::set<size_t>{1, 3, 5}));
}

TEST(MprotectKernelWrites, GenuinelyBadDestinationsStillFailWithEfault) {
  Mapping m(8 * Pg());
  std::unique_ptr<Tracker> t = TrackAll(m);
  ASSERT_NE(t, nullptr);
  Pipe p;
  p.Put("0123456789abcdef");
  // A page that was unmapped (the compiler cannot see through it).
  void* const bad = mmap(nullptr, Pg(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(bad, MAP_FAILED);
  ASSERT_EQ(munmap(bad, Pg()), 0);
  errno = 0;
  EXPECT_EQ(read(p.r(), bad, 4), -1);
  EXPECT_EQ(errno, EFAULT);
  // A tracked page the program itself made read-only: the kernel's EFAULT
  // is the program's, and pagewise does not write-fault it open.
  ASSERT_EQ(mprotect(m.page(4), Pg(), PROT_READ), 0);
  errno = 0;
  EXPECT_EQ(read(p.r(), m.page(4), 4), -1);
  EXPECT_EQ(errno, EFAULT);
  // readv/recvmsg with an unreadable iovec array or header: EFAULT, not a
  // crash inside the interposer.
  errno = 0;
  EXPECT_EQ(readv(p.r(), static_cast<const struct iovec*>(bad), 1), -1);
  EXPECT_EQ(errno, EFAULT);
  SocketPair s(SOCK_STREAM);
  ASSERT_EQ(send(s.a(), "hi", 2, 0), 2);
  errno = 0;
  EXPECT_EQ(recvmsg(s.b(), static_cast<struct msghdr*>(bad), 0), -1);
  EXPECT_EQ(errno, EFAULT);
  // Nothing was consumed by the failed calls: all 16 bytes are still there.
  char got[16];
  ASSERT_EQ(read(p.r(), got, sizeof got), 16);
  EXPECT_EQ(std::string(got, 16), "0123456789abcdef");
  EXPECT_EQ(CollectPages(t.get(), m.data(), 8), std::set<size_t>{});
  ASSERT_EQ(mprotect(m.page(4), Pg(), PROT_READ | PROT_WRITE), 0);
}

// A collector re-protects the pages between the interposer's opening and
// the kernel's copy as often as it can (each read spans 8 pages, opened one
// fault after the other, so collects land in between): every read still
// succeeds (a copy that faulted before its first byte is re-opened and
// retried; one that faulted later returns a short count, and the program
// reads the rest), the data arrives intact, and every page read into is
// reported by some collect.
TEST(MprotectKernelWrites, ReadsRacingCollectsNeverFailAndAreReported) {
  constexpr size_t kPages = 16, kSpan = 8;
  constexpr int kReads = 400;
  Mapping m(kPages * Pg());
  std::unique_ptr<Tracker> t = TrackAll(m);
  ASSERT_NE(t, nullptr);
  std::atomic<bool> stop{false};
  std::set<size_t> reported;
  std::thread collector([&] {
    while (!stop.load(std::memory_order_acquire)) {
      for (size_t p : CollectPages(t.get(), m.data(), kPages)) reported.insert(p);
    }
  });
  Pipe p;
  int failures = 0;
  std::set<size_t> targets;
  for (int i = 0; i < kReads && failures == 0; ++i) {
    const size_t first = i % (kPages - kSpan + 1);
    const std::string data = Pattern(kSpan * Pg(), static_cast<char>(i));
    p.Put(data);
    char* dst = m.page(first);
    for (size_t done = 0; done < data.size();) {
      const ssize_t n = read(p.r(), dst + done, data.size() - done);
      if (n <= 0) {
        ++failures;
        ADD_FAILURE() << "read " << i << " returned " << n << ": " << strerror(errno);
        break;
      }
      done += n;
    }
    if (failures != 0) break;
    ASSERT_EQ(std::string(dst, data.size()), data) << "read " << i;
    for (size_t q = first; q < first + kSpan; ++q) targets.insert(q);
  }
  stop.store(true, std::memory_order_release);
  collector.join();
  for (size_t q : CollectPages(t.get(), m.data(), kPages)) reported.insert(q);
  for (size_t q : targets) EXPECT_TRUE(reported.count(q)) << "page " << q << " never reported";
  EXPECT_EQ(failures, 0);
}

}  // namespace
}  // namespace pagewise::testing
