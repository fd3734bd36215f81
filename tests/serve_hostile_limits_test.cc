// The page server against clients that lie in their handshake body or
// overwhelm it: regions beyond the source, wrapping, overlapping, too many,
// too large, unaligned, of another page size, malformed or oversized
// bodies; server-wide limits (clients, registered bytes); floods of
// connections and a slowloris; a peer of another uid (setresuid); a client
// whose page state cannot be allocated; clients dying mid-handshake and
// mid-restore. Honest clients are served beside every attack and check
// every byte; no descriptor leaks.
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "serve_hostile_util.h"
#include "testing/skip.h"
#include "testing/test_util.h"

// The allocation-failure test asks for more than the sanitizers' allocator
// serves: with this option they return null to a nothrow allocation (as the
// plain allocator does) instead of aborting.
extern "C" const char* __asan_default_options() { return "allocator_may_return_null=1"; }
extern "C" const char* __tsan_default_options() { return "allocator_may_return_null=1"; }

namespace pagewise::hostile {
namespace {

constexpr size_t kPages = 512;

struct Fixture {
  testing::TempDir dir;
  PatternBuffer file{kPages, 902};
  std::string mem = dir.File("guest.mem");
  std::string sock = dir.File("uffd.sock");
  EventLog log;
  std::unique_ptr<PageServer> server;

  explicit Fixture(ServeOptions so = {}, std::shared_ptr<PageSource> source = nullptr) {
    EXPECT_TRUE(file.WriteFile(mem));
    so.fill.background_fill = false;
    so.on_event = log.Fn();
    if (source == nullptr) source = *OpenMemFileSource(mem, MemFileAccess::kPread);
    auto s = PageServer::Start(sock, source, so);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (s.ok()) server = std::move(s).value();
  }

  // Sends `body` with a real userfaultfd (EVENT_REMOVE); true if refused.
  bool Refused(const std::string& body) const {
    const int uffd = MakeUffd(kEventRemove);
    const int s = Connect(sock);
    const bool refused = uffd >= 0 && s >= 0 && SendMsg(s, body, {uffd}) && SeesEof(s);
    close(s);
    close(uffd);
    return refused;
  }
};

std::string One(uint64_t addr, uint64_t size, uint64_t offset, uint64_t ps = Ps()) {
  return "[" + RegionJson(addr, size, offset, ps) + "]";
}

TEST(ServeHostileLimits, LyingRegionsAndBodiesAreRefused) {
  ServeOptions so;
  so.limits.max_regions = 8;
  so.limits.max_client_bytes = 256 * Ps();
  so.limits.max_handshake_bytes = 64 * 1024;
  Fixture f(so);
  ASSERT_TRUE(f.server);
  HonestClient a, b;
  ASSERT_TRUE(a.Start(f.sock, f.file, {{0, 128 * Ps()}}));
  ASSERT_TRUE(b.Start(f.sock, f.file, {{256 * Ps(), 256 * Ps()}}));
  ASSERT_TRUE(a.WaitFirstHalf());
  ASSERT_TRUE(b.WaitFirstHalf());
  const size_t fds_before = OpenFds();
  const uint64_t base = uint64_t{1} << 40, ps = Ps(), size = f.file.size();
  struct Attack {
    std::string body, limit;
  };
  std::string nine = "[", deep, big = "[";
  for (int i = 0; i < 9; ++i) nine += (i ? "," : "") + RegionJson(base + i * 8 * ps, ps, 0, ps);
  nine += "]";
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  while (big.size() < 70 * 1024) big += RegionJson(base, ps, 0, ps) + ",";
  big += RegionJson(base, ps, 0, ps) + "]";
  const std::vector<Attack> attacks = {
      {One(base, 2 * ps, size - ps), ""},              // beyond the source
      {One(base, 2 * ps, ~uint64_t{0} - ps + 1), ""},  // offset + size wraps
      {One(~uint64_t{0} - ps + 1, 2 * ps, 0), ""},     // address wraps
      {One(uint64_t{1} << 63, ps, 0), ""},             // beyond user space
      {"[" + RegionJson(base, 8 * ps, 0, ps) + "," + RegionJson(base + 4 * ps, 8 * ps, 0, ps) + "]",
       ""},               // overlapping
      {nine, "regions"},  // too many
      {"[" + RegionJson(base, 200 * ps, 0, ps) + "," +
           RegionJson(base + 400 * ps, 200 * ps, 0, ps) + "]",
       "client_bytes"},                      // too many bytes
      {One(base + 1, ps, 0), ""},            // unaligned address
      {One(base, ps + 1, 0), ""},            // unaligned size
      {One(base, 0, 0), ""},                 // empty
      {One(base, 2 << 20, 0, 2 << 20), ""},  // hugetlbfs page size
      {"[{\"base_host_virt_addr\":-4096,\"size\":4096,\"offset\":0,\"page_size\":4096}]", ""},
      {"[{\"base_host_virt_addr\":1e400,\"size\":4096,\"offset\":0,\"page_size\":4096}]", ""},
      {"[{\"base_host_virt_addr\":\"x\",\"size\":4096,\"offset\":0,\"page_size\":4096}]", ""},
      {"[]", ""},                // no regions
      {"{\"regions\":[]}", ""},  // not an array
      {"[1,2] trailing", ""},    // bytes after the body
      {deep, ""},                // nesting
      {big, "handshake_bytes"},  // larger than the limit
  };
  for (size_t i = 0; i < attacks.size(); ++i) {
    EXPECT_TRUE(f.Refused(attacks[i].body)) << i;
  }
  ASSERT_TRUE(f.log.WaitFor(ServeEvent::Kind::kRefused, attacks.size()));
  EXPECT_EQ(f.server->refused(), attacks.size());
  size_t i = 0;
  for (const ServeEvent& e : f.log.All()) {
    if (e.kind != ServeEvent::Kind::kRefused) continue;
    EXPECT_EQ(e.limit, attacks[i].limit) << i << ": " << FormatServeEvent(e);
    EXPECT_FALSE(e.reason.ok());
    ++i;
  }
  EXPECT_EQ(OpenFds(), fds_before);
  EXPECT_EQ(a.Finish(), 0);
  EXPECT_EQ(b.Finish(), 0);
}

TEST(ServeHostileLimits, ServerWideLimitsRefuseTheExtraClientOnly) {
  ServeOptions so;
  so.limits.max_clients = 2;
  so.limits.max_total_bytes = 300 * Ps();
  Fixture f(so);
  ASSERT_TRUE(f.server);
  HonestClient a, b;
  ASSERT_TRUE(a.Start(f.sock, f.file, {{0, 128 * Ps()}}));
  ASSERT_TRUE(a.WaitFirstHalf());
  ASSERT_TRUE(b.Start(f.sock, f.file, {{128 * Ps(), 128 * Ps()}}));
  ASSERT_TRUE(b.WaitFirstHalf());
  const uint64_t base = uint64_t{1} << 40;
  EXPECT_TRUE(f.Refused(One(base, Ps(), 0)));  // a third client
  EXPECT_EQ(a.Finish(), 0);
  ASSERT_TRUE(f.server->WaitClientsDone(1, kFailureTimeout).ok());
  // a's place is free, but b's 128 pages and 256 more exceed 300.
  EXPECT_TRUE(f.Refused(One(base, 256 * Ps(), 0)));
  HonestClient c;  // 128 more fit
  ASSERT_TRUE(c.Start(f.sock, f.file, {{256 * Ps(), 128 * Ps()}}));
  ASSERT_TRUE(c.WaitFirstHalf());
  EXPECT_EQ(b.Finish(), 0);
  EXPECT_EQ(c.Finish(), 0);
  std::vector<std::string> limits;
  for (const ServeEvent& e : f.log.All()) {
    if (e.kind == ServeEvent::Kind::kRefused) limits.push_back(e.limit);
  }
  EXPECT_EQ(limits, (std::vector<std::string>{"clients", "total_bytes"}));
}

TEST(ServeHostileLimits, FloodsAndSlowlorisDelayNobodyAndAreBounded) {
  ServeOptions so;
  so.limits.max_pending = 4;
  so.handshake_timeout = std::chrono::seconds(3);
  Fixture f(so);
  ASSERT_TRUE(f.server);
  HonestClient before;
  ASSERT_TRUE(before.Start(f.sock, f.file, {{0, 64 * Ps()}}));
  ASSERT_TRUE(before.WaitFirstHalf());
  // A slowloris holds one slot with a dribble; three idle connections fill
  // the rest; twenty more are refused at once.
  const int slow = Connect(f.sock);
  ASSERT_TRUE(SendMsg(slow, "[", {}));
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(Connect(f.sock));
  for (int i = 0; i < 20; ++i) {
    const int s = Connect(f.sock);
    EXPECT_TRUE(SeesEof(s)) << i;
    close(s);
  }
  ASSERT_TRUE(f.log.WaitFor(ServeEvent::Kind::kRefused, 20));
  for (const ServeEvent& e : f.log.All()) EXPECT_EQ(e.limit, "pending") << FormatServeEvent(e);
  // The flood leaves; an honest client gets in and is served while the
  // slowloris still dribbles.
  for (int s : idle) close(s);
  ASSERT_TRUE(SendMsg(slow, "{", {}));
  HonestClient during;
  ASSERT_TRUE(during.Start(f.sock, f.file, {{64 * Ps(), 128 * Ps()}}));
  ASSERT_TRUE(during.WaitFirstHalf());
  EXPECT_EQ(during.Finish(), 0);
  // The slowloris is cut off at its deadline (with the idle ones that
  // left: those saw end of stream from their side already).
  EXPECT_TRUE(SeesEof(slow));
  close(slow);
  EXPECT_NE(f.server->last_refusal().message().find("not received within"), std::string::npos)
      << f.server->last_refusal().ToString();
  EXPECT_EQ(before.Finish(), 0);
}

// In a forked child: drops to uid/gid 65534 after creating its userfaultfd
// (as unprivileged users may not), connects and sends a handshake for real
// memory. Exits 0 if refused (end of stream or reset), 10 if served
// exactly, 20 if connect(2) was refused by the socket's mode, other values
// on errors.
int OtherUser(const std::string& sock, const PatternBuffer& file) {
  const size_t len = 32 * Ps();
  char* mem = static_cast<char*>(
      mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  const int uffd = MakeUffd(kEventRemove);
  if (uffd < 0 ||
      !Env::Default()
           ->UffdRegister(uffd, reinterpret_cast<uint64_t>(mem), len, kRegisterMissing, nullptr)
           .ok()) {
    return 2;
  }
  const gid_t nobody_group = 65534;
  if (setgroups(1, &nobody_group) != 0 || setresgid(65534, 65534, 65534) != 0 ||
      setresuid(65534, 65534, 65534) != 0) {
    return 3;
  }
  const int s = Connect(sock);
  if (s < 0) return errno == EACCES ? 20 : 4;
  // The server may refuse before reading anything: the send then fails.
  if (!SendOneRegion(s, mem, len, 0, uffd)) {  // forked: no allocation
    return errno == EPIPE || errno == ECONNRESET ? 0 : 5;
  }
  struct pollfd pf = {s, POLLIN, 0};
  char c;
  if (poll(&pf, 1, kFailureTimeoutMs) != 1) return 6;
  // Refused: end of stream, or ECONNRESET when the server closed the
  // connection with our handshake still unread in its buffer (a Unix
  // stream socket closed with unread data resets its peer). Only the
  // ready byte means served: touching the memory without it would wait
  // forever on a userfaultfd nobody serves (this process holds it open).
  const ssize_t n = read(s, &c, 1);
  if (n == 0 || (n < 0 && errno == ECONNRESET)) return 0;
  if (n != 1) return 8;
  if (c != kReadyByte) return 9;
  for (size_t i = 0; i < len / Ps(); ++i) {
    if (!file.Matches(mem + i * Ps(), i)) return 7;
  }
  return 10;
}

int RunOtherUser(const Fixture& f) {
  const pid_t pid = fork();
  if (pid == 0) _exit(OtherUser(f.sock, f.file));
  return WaitExit(pid);
}

TEST(ServeHostileLimits, PeersOfOtherUsersAreKeptOut) {
  if (geteuid() != 0) PAGEWISE_SKIP() << "needs root to switch to uid 65534 (run the test as root)";
  {
    Fixture f;  // default: socket 0600, our own uid only
    ASSERT_TRUE(f.server);
    ASSERT_EQ(chmod(f.dir.path().c_str(), 0711), 0);  // only the socket's own mode keeps it out
    struct stat st;
    ASSERT_EQ(stat(f.sock.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    HonestClient honest;
    ASSERT_TRUE(honest.Start(f.sock, f.file, {{0, 64 * Ps()}}));
    ASSERT_TRUE(honest.WaitFirstHalf());
    EXPECT_EQ(RunOtherUser(f), 20);  // 0600 keeps uid 65534 from connecting at all
    EXPECT_EQ(honest.Finish(), 0);
  }
  {
    ServeOptions so;
    so.access.socket_mode = 0666;  // anyone may connect: the uid check must refuse
    Fixture f(so);
    ASSERT_TRUE(f.server);
    ASSERT_EQ(chmod(f.dir.path().c_str(), 0711), 0);
    EXPECT_EQ(RunOtherUser(f), 0);
    ASSERT_TRUE(f.log.WaitFor(ServeEvent::Kind::kRefused, 1));
    const ServeEvent e = f.log.All()[0];
    EXPECT_EQ(e.uid, 65534);
    EXPECT_EQ(e.gid, 65534);
    EXPECT_EQ(e.reason.code(), Code::kPermissionDenied);
    EXPECT_NE(FormatServeEvent(e).find("uid=65534"), std::string::npos);
  }
  for (bool by_gid : {false, true}) {
    ServeOptions so;
    so.access.socket_mode = 0666;
    if (by_gid) {
      so.access.allow_gids = {65534};
    } else {
      so.access.allow_uids = {0, 65534};
    }
    Fixture f(so);
    ASSERT_TRUE(f.server);
    ASSERT_EQ(chmod(f.dir.path().c_str(), 0711), 0);
    EXPECT_EQ(RunOtherUser(f), 10) << by_gid;  // allowed: served exactly
  }
}

TEST(ServeHostileLimits, UnallocatablePageStateRefusesThatClientOnly) {
  testing::TempDir dir;
  PatternBuffer file(kPages, 903);
  // An image whose flat view is the pattern file followed by 2^61 bytes of
  // zero pages: a region that large passes every check but the memory one.
  const std::string img = dir.File("huge.img");
  {
    auto w = ImageWriter::Create(img);
    ASSERT_TRUE(w.ok());
    Region data, zero;
    data.length = file.size();
    data.kind = zero.kind = RegionKind::kFlat;
    zero.length = uint64_t{1} << 61;
    zero.offset = file.size();
    ASSERT_TRUE((*w)->AddRegion(data).ok());
    ASSERT_TRUE((*w)->AddRegion(zero).ok());
    ASSERT_TRUE((*w)->AddPages(0, 0, file.data(), file.size()).ok());
    ASSERT_TRUE((*w)->AddZeroPages(1, 0, zero.length).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  ServeOptions so;
  so.limits.max_client_bytes = so.limits.max_total_bytes = uint64_t{1} << 62;
  auto source = OpenImageSource(img);
  ASSERT_TRUE(source.ok());
  Fixture f(so, *source);
  ASSERT_TRUE(f.server);
  HonestClient honest;
  ASSERT_TRUE(honest.Start(f.sock, file, {{0, 256 * Ps()}}));
  ASSERT_TRUE(honest.WaitFirstHalf());
  // 2^54 bytes: 2^42 bytes (4 TiB) of page state.
  EXPECT_TRUE(f.Refused(One(uint64_t{1} << 40, uint64_t{1} << 54, file.size())));
  ASSERT_TRUE(f.log.WaitFor(ServeEvent::Kind::kRefused, 1));
  EXPECT_EQ(f.server->last_refusal().code(), Code::kResourceExhausted);
  EXPECT_EQ(f.log.All()[0].limit, "memory");
  EXPECT_EQ(honest.Finish(), 0);
  HonestClient after;
  ASSERT_TRUE(after.Start(f.sock, file, {{256 * Ps(), 256 * Ps()}}));
  ASSERT_TRUE(after.WaitFirstHalf());
  EXPECT_EQ(after.Finish(), 0);
}

TEST(ServeHostileLimits, ClientsDyingMidHandshakeAndMidRestoreEndOnlyThemselves) {
  Fixture f;
  ASSERT_TRUE(f.server);
  HonestClient honest;
  ASSERT_TRUE(honest.Start(f.sock, f.file, {{0, 128 * Ps()}}));
  ASSERT_TRUE(honest.WaitFirstHalf());
  const size_t fds_before = OpenFds();
  {  // Half a handshake, with its descriptor, then death.
    const pid_t pid = fork();
    if (pid == 0) {
      const int uffd = MakeUffd(kEventRemove);
      const int s = Connect(f.sock.c_str());
      static const char kHalf[] = "[{\"base_host_virt_addr\":";
      SendRaw(s, kHalf, sizeof(kHalf) - 1, &uffd, 1);  // forked: no allocation
      _exit(0);
    }
    EXPECT_EQ(WaitExit(pid), 0);
    ASSERT_TRUE(f.log.WaitFor(ServeEvent::Kind::kRefused, 1));
    EXPECT_EQ(f.server->last_refusal().code(), Code::kPeerGone);
  }
  {  // Killed while its first half is being served.
    HonestClient victim;
    ASSERT_TRUE(victim.Start(f.sock, f.file, {{128 * Ps(), 384 * Ps()}}));
    ASSERT_TRUE(victim.WaitFirstHalf());
    victim.Kill();
    ASSERT_TRUE(f.server->WaitClientsDone(1, kFailureTimeout).ok());
  }
  EXPECT_EQ(OpenFds(), fds_before);
  EXPECT_EQ(honest.Finish(), 0);
  ASSERT_TRUE(f.server->WaitClientsDone(2, kFailureTimeout).ok());
}

}  // namespace
}  // namespace pagewise::hostile
