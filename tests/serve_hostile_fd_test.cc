// The page server against clients that lie about their descriptor: a
// pipe or socket pre-loaded with fabricated userfaultfd events (FORK
// messages naming descriptor numbers of the server, faults, unmaps), an
// eventfd, a regular file (the memory file itself), a memfd, /dev/null, a
// userfaultfd without EVENT_REMOVE or without UFFDIO_API, several
// descriptors, more descriptors than fit (MSG_CTRUNC), none, the same
// userfaultfd twice, and a client whose forks exceed max_spaces. Honest
// clients are served beside every attack and check every byte; no
// descriptor leaks; the listening socket and every honest userfaultfd keep
// working.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <cstring>
#include <string>
#include <vector>

#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "serve_hostile_util.h"
#include "sys/uapi.h"  // raw UFFDIO_API/feature numbers to build hostile userfaultfds
#include "testing/test_util.h"

namespace pagewise::hostile {
namespace {

constexpr size_t kPages = 512;

struct Fixture {
  testing::TempDir dir;
  PatternBuffer file{kPages, 901};
  std::string mem = dir.File("guest.mem");
  std::string sock = dir.File("uffd.sock");
  EventLog log;
  std::unique_ptr<PageServer> server;

  explicit Fixture(ServeOptions so = {}) {
    EXPECT_TRUE(file.WriteFile(mem));
    so.fill.background_fill = false;  // pages come on demand: served after the attacks too
    so.on_event = log.Fn();
    auto src = OpenMemFileSource(mem, MemFileAccess::kPread);
    EXPECT_TRUE(src.ok());
    auto s = PageServer::Start(sock, *src, so);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (s.ok()) server = std::move(s).value();
  }
};

// A handshake body naming one real mapping of this process (so that only
// the descriptor is wrong).
struct Target {
  char* mem = nullptr;
  size_t len = 16 * Ps();
  Target() {
    mem = static_cast<char*>(
        mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  }
  ~Target() { munmap(mem, len); }
  std::string Body() const {
    return "[" + RegionJson(reinterpret_cast<uint64_t>(mem), len, 0, Ps()) + "]";
  }
};

// Fabricated userfaultfd messages: FORKs naming descriptors 0..63 (the
// server's listening socket and its clients' userfaultfds are among them),
// faults at `addr`, an UNMAP of everything.
std::string FakeEvents(uint64_t addr) {
  std::string out;
  for (uint32_t fd = 0; fd < 64; ++fd) {
    uffd_msg m = {};
    m.event = UFFD_EVENT_FORK;
    m.arg.fork.ufd = fd;
    out.append(reinterpret_cast<const char*>(&m), sizeof(m));
    m = {};
    m.event = UFFD_EVENT_PAGEFAULT;
    m.arg.pagefault.address = addr;
    out.append(reinterpret_cast<const char*>(&m), sizeof(m));
  }
  uffd_msg u = {};
  u.event = UFFD_EVENT_UNMAP;
  u.arg.remove.start = 0;
  u.arg.remove.end = ~0ULL;
  out.append(reinterpret_cast<const char*>(&u), sizeof(u));
  return out;
}

// Connects, sends `body` with `fds`, expects to be refused (end of stream).
void ExpectRefused(const Fixture& f, const std::string& body, const std::vector<int>& fds,
                   const std::string& what) {
  const int s = Connect(f.sock);
  ASSERT_GE(s, 0) << what;
  ASSERT_TRUE(SendMsg(s, body, fds)) << what;
  EXPECT_TRUE(SeesEof(s)) << what;
  close(s);
}

TEST(ServeHostileFd, DescriptorsThatAreNotAUsableUffdAreRefused) {
  Fixture f;
  ASSERT_TRUE(f.server);
  HonestClient a, b;
  ASSERT_TRUE(a.Start(f.sock, f.file, {{0, 128 * Ps()}}));
  ASSERT_TRUE(b.Start(f.sock, f.file, {{128 * Ps(), 64 * Ps()}, {384 * Ps(), 128 * Ps()}}));
  ASSERT_TRUE(a.WaitFirstHalf());
  ASSERT_TRUE(b.WaitFirstHalf());
  const size_t fds_before = OpenFds();
  Target t;
  const std::string fake = FakeEvents(reinterpret_cast<uint64_t>(t.mem));
  std::vector<std::string> expect_reason;
  {
    int p[2];
    ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    ASSERT_EQ(write(p[1], fake.data(), fake.size()), static_cast<ssize_t>(fake.size()));
    ExpectRefused(f, t.Body(), {p[0]}, "pipe");
    expect_reason.push_back("pipe:[");
    int sp[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    ASSERT_EQ(write(sp[1], fake.data(), fake.size()), static_cast<ssize_t>(fake.size()));
    ExpectRefused(f, t.Body(), {sp[0]}, "socket");
    expect_reason.push_back("socket:[");
    const int efd = eventfd(5, EFD_CLOEXEC);
    ExpectRefused(f, t.Body(), {efd}, "eventfd");
    expect_reason.push_back("anon_inode:[eventfd]");
    const int file_fd = open(f.mem.c_str(), O_RDONLY | O_CLOEXEC);
    ExpectRefused(f, t.Body(), {file_fd}, "the memory file");
    expect_reason.push_back(f.mem);
    const int mfd = memfd_create("fake-uffd", MFD_CLOEXEC);
    ASSERT_EQ(write(mfd, fake.data(), fake.size()), static_cast<ssize_t>(fake.size()));
    ExpectRefused(f, t.Body(), {mfd}, "memfd");
    expect_reason.push_back("/memfd:fake-uffd");
    const int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    ExpectRefused(f, t.Body(), {null_fd}, "/dev/null");
    expect_reason.push_back("/dev/null");
    const int no_remove = MakeUffd(0);
    ExpectRefused(f, t.Body(), {no_remove}, "uffd without EVENT_REMOVE");
    expect_reason.push_back("without UFFD_FEATURE_EVENT_REMOVE");
    const int no_api = MakeUffd(0, /*api=*/false);
    ExpectRefused(f, t.Body(), {no_api}, "uffd without UFFDIO_API");
    expect_reason.push_back("without UFFD_FEATURE_EVENT_REMOVE");
    const int good = MakeUffd(kEventRemove);
    ExpectRefused(f, t.Body(), {good, p[0]}, "two descriptors");
    expect_reason.push_back("2 descriptors");
    std::vector<int> many(20, efd);  // more than the server has room for
    ExpectRefused(f, t.Body(), many, "20 descriptors");
    expect_reason.push_back("truncated");
    ExpectRefused(f, t.Body(), {}, "no descriptor");
    expect_reason.push_back("no descriptor");
    // The descriptor in a second message of the same handshake counts too.
    const int s = Connect(f.sock);
    const std::string body = t.Body();
    ASSERT_TRUE(SendMsg(s, body.substr(0, 5), {good}));
    ASSERT_TRUE(SendMsg(s, body.substr(5), {efd}));
    EXPECT_TRUE(SeesEof(s));
    close(s);
    expect_reason.push_back("2 descriptors");
    for (int fd : {p[0], p[1], sp[0], sp[1], efd, file_fd, mfd, null_fd, no_remove, no_api, good})
      close(fd);
  }
  ASSERT_TRUE(f.log.WaitFor(ServeEvent::Kind::kRefused, expect_reason.size()));
  EXPECT_EQ(f.server->refused(), expect_reason.size());
  const std::vector<ServeEvent> events = f.log.All();
  size_t i = 0;
  for (const ServeEvent& e : events) {
    if (e.kind != ServeEvent::Kind::kRefused) continue;
    ASSERT_LT(i, expect_reason.size());
    EXPECT_NE(e.reason.message().find(expect_reason[i]), std::string::npos)
        << i << ": " << e.reason.ToString();
    EXPECT_EQ(e.pid, getpid());
    EXPECT_EQ(e.uid, static_cast<int64_t>(getuid()));
    const std::string line = FormatServeEvent(e);
    EXPECT_EQ(line.find('\n'), std::string::npos);
    EXPECT_EQ(line.rfind("event=refused conn=", 0), 0u) << line;
    ++i;
  }
  // None of the descriptors it was sent stayed open in the server.
  EXPECT_EQ(OpenFds(), fds_before);
  // The honest clients kept being served, byte-exact, and the listening
  // socket still admits newcomers.
  EXPECT_EQ(a.Finish(), 0);
  EXPECT_EQ(b.Finish(), 0);
  HonestClient late;
  ASSERT_TRUE(late.Start(f.sock, f.file, {{256 * Ps(), 128 * Ps()}}));
  ASSERT_TRUE(late.WaitFirstHalf());
  EXPECT_EQ(late.Finish(), 0);
  ASSERT_TRUE(f.server->WaitClientsDone(3, kFailureTimeout).ok());
  for (const ClientReport& c : f.server->clients()) {
    EXPECT_EQ(c.status.code(), Code::kPeerGone) << c.status.ToString();
    EXPECT_NE(c.uffd_features & kEventRemove, 0u);
  }
}

TEST(ServeHostileFd, TheSameUffdServedTwiceIsRefused) {
  Fixture f;
  ASSERT_TRUE(f.server);
  const size_t len = 64 * Ps();
  char* mem = static_cast<char*>(
      mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(mem, MAP_FAILED);
  const int uffd = MakeUffd(kEventRemove);
  ASSERT_GE(uffd, 0);
  ASSERT_TRUE(
      Env::Default()
          ->UffdRegister(uffd, reinterpret_cast<uint64_t>(mem), len, kRegisterMissing, nullptr)
          .ok());
  const std::string body =
      "[" + RegionJson(reinterpret_cast<uint64_t>(mem), len, 64 * Ps(), Ps()) + "]";
  const int first = Connect(f.sock);
  ASSERT_TRUE(SendMsg(first, body, {uffd}));
  char ready;
  ASSERT_EQ(read(first, &ready, 1), 1);  // admitted
  const int copy = dup(uffd);
  ExpectRefused(f, body, {copy}, "a duplicate of a served uffd");
  close(copy);
  ASSERT_TRUE(f.log.WaitFor(ServeEvent::Kind::kRefused, 1));
  EXPECT_NE(f.server->last_refusal().message().find("served already"), std::string::npos);
  for (size_t i = 0; i < len / Ps(); ++i) {
    EXPECT_TRUE(f.file.Matches(mem + i * Ps(), 64 + i)) << i;
  }
  close(first);
  ASSERT_TRUE(f.server->WaitClientsDone(1, kFailureTimeout).ok());
  close(uffd);
  munmap(mem, len);
}

// The forking client: region of 16 pages at file page 32, EVENT_FORK; it
// forks `children` that stay alive until released, then each reads page
// `child` and exits 0 (exact), 1 (wrong bytes, e.g. zeros) or 3 (SIGBUS).
// The client exits with the children's results as a bit mask:
// bit 2i = exact, bit 2i+1 = SIGBUS.
int ForkingClient(const std::string& sock, const PatternBuffer& file, int children) {
  // Runs in a child forked from the multi-threaded test: it allocates
  // nothing (see FormatRegionJson).
  const size_t len = 16 * Ps();
  char* mem = nullptr;
  int uffd = -1;
  const int s =
      MapAndHandshake(sock.c_str(), len, 32 * Ps(), kEventRemove | kEventFork, &mem, &uffd);
  if (s < 0) return 255;
  char ready;
  if (read(s, &ready, 1) != 1) return 254;
  int go[2];
  if (pipe(go) != 0) return 253;
  constexpr int kMaxChildren = 8;
  if (children > kMaxChildren) return 251;
  pid_t kids[kMaxChildren];
  for (int k = 0; k < children; ++k) {
    const pid_t pid = fork();
    if (pid == 0) {
      char c;
      if (read(go[0], &c, 1) != 1) _exit(2);
      char page[65536];
      if (testing::ReadPageOrSigbus(mem + k * Ps(), page)) _exit(3);
      _exit(file.Matches(page, 32 + k) ? 0 : 1);
    }
    kids[k] = pid;
  }
  const char go_bytes[kMaxChildren] = {'g', 'g', 'g', 'g', 'g', 'g', 'g', 'g'};
  if (write(go[1], go_bytes, children) != children) return 252;
  int mask = 0;
  for (int k = 0; k < children; ++k) {
    const int rc = WaitExit(kids[k]);
    if (rc == 0) mask |= 1 << (2 * k);
    if (rc == 3) mask |= 1 << (2 * k + 1);
  }
  return mask;
}

TEST(ServeHostileFd, ForksBeyondMaxSpacesGetSigbusNeverZeros) {
  ServeOptions so;
  so.limits.max_spaces = 3;  // the client and two children
  Fixture f(so);
  ASSERT_TRUE(f.server);
  HonestClient honest;
  ASSERT_TRUE(honest.Start(f.sock, f.file, {{256 * Ps(), 128 * Ps()}}));
  ASSERT_TRUE(honest.WaitFirstHalf());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(ForkingClient(f.sock, f.file, 4));
  const int mask = WaitExit(pid);
  // Children 0 and 1 are served exactly; 2 and 3 were refused: SIGBUS.
  EXPECT_EQ(mask, (1 << 0) | (1 << 2) | (1 << 5) | (1 << 7)) << mask;
  ASSERT_TRUE(f.log.WaitFor(ServeEvent::Kind::kLimit, 2));
  for (const ServeEvent& e : f.log.All()) {
    if (e.kind != ServeEvent::Kind::kLimit) continue;
    EXPECT_EQ(e.limit, "spaces");
    EXPECT_EQ(e.pid, pid);
  }
  EXPECT_EQ(honest.Finish(), 0);
  ASSERT_TRUE(f.server->WaitClientsDone(2, kFailureTimeout).ok());
  uint64_t refused = 0;
  for (const ClientReport& c : f.server->clients()) refused += c.stats.spaces_refused;
  EXPECT_EQ(refused, 2u);
}

}  // namespace
}  // namespace pagewise::hostile
