// The page server against its environment: a --mem-file that shrinks under
// it (the clients whose pages are gone get SIGBUS, never zeros; the others
// and the server go on), socket paths that name something else (a regular
// file, the memory file itself, a directory, a symbolic link, a live
// server's socket; only a stale socket is replaced, and only our own socket
// is removed at exit), and running out of descriptors (accept backs off and
// logs once per episode instead of spinning, then recovers).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "restore/restore_env.h"
#include "serve_hostile_util.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise::hostile {
namespace {

constexpr size_t kPages = 512;

std::string Slurp(const std::string& path) {
  std::string s;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<missing>";
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
  close(fd);
  return s;
}

// A child that registers file pages [256, 512), connects, touches the
// first 16 (served), reports, waits, then reads the rest: exits 0 if every
// one of those raised SIGBUS, 1 if one read data or zeros, 2 on setup
// errors.
class Victim {
 public:
  bool Start(const std::string& sock, const PatternBuffer& file) {
    int up[2], down[2];
    if (pipe2(up, O_CLOEXEC) != 0 || pipe2(down, O_CLOEXEC) != 0) return false;
    pid_ = fork();
    if (pid_ == 0) _exit(Run(sock, file, up[1], down[0]));
    close(up[1]);
    close(down[0]);
    up_ = up[0];
    down_ = down[1];
    char c;
    return read(up_, &c, 1) == 1 && c == 'A';
  }
  int Finish() {
    const char c = 'B';
    if (write(down_, &c, 1) != 1) return -1;
    close(up_);
    close(down_);
    return WaitExit(pid_);
  }

 private:
  // The child: allocates nothing (forked from a multi-threaded process; see
  // FormatRegionJson).
  static int Run(const std::string& sock, const PatternBuffer& file, int up, int down) {
    const size_t len = 256 * Ps();
    char* mem = nullptr;
    int uffd = -1;
    if (MapAndHandshake(sock.c_str(), len, 256 * Ps(), kEventRemove, &mem, &uffd) < 0) return 2;
    for (size_t i = 0; i < 16; ++i) {
      if (!file.Matches(mem + i * Ps(), 256 + i)) return 1;
    }
    char c = 'A';
    if (write(up, &c, 1) != 1 || read(down, &c, 1) != 1) return 2;
    char page[65536];
    for (size_t i = 16; i < 256; ++i) {
      if (!testing::ReadPageOrSigbus(mem + i * Ps(), page)) return 1;
    }
    return 0;
  }
  pid_t pid_ = -1;
  int up_ = -1, down_ = -1;
};

TEST(ServeHostileFile, ShrinkingMemFilePoisonsOnlyThePagesItLost) {
  testing::TempDir dir;
  PatternBuffer file(kPages, 904);
  const std::string mem = dir.File("guest.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  const std::string sock = dir.File("uffd.sock");
  // As `pagewise serve --mem-file` opens it.
  auto source = OpenMemFileSource(mem, MemFileAccess::kPread);
  ASSERT_TRUE(source.ok());
  ServeOptions so;
  so.fill.background_fill = false;
  auto server = PageServer::Start(sock, *source, so);
  ASSERT_TRUE(server.ok());
  HonestClient honest;
  ASSERT_TRUE(honest.Start(sock, file, {{0, 256 * Ps()}}));
  ASSERT_TRUE(honest.WaitFirstHalf());
  Victim victim;
  ASSERT_TRUE(victim.Start(sock, file));
  ASSERT_EQ(truncate(mem.c_str(), static_cast<off_t>(256 * Ps())), 0);
  EXPECT_EQ(victim.Finish(), 0);  // SIGBUS on every page it lost, never zeros
  EXPECT_EQ(honest.Finish(), 0);  // its pages are still in the file
  HonestClient after;             // the server goes on
  ASSERT_TRUE(after.Start(sock, file, {{64 * Ps(), 128 * Ps()}}));
  ASSERT_TRUE(after.WaitFirstHalf());
  EXPECT_EQ(after.Finish(), 0);
  ASSERT_TRUE((*server)->WaitClientsDone(3, kFailureTimeout).ok());
  uint64_t poisoned = 0;
  for (const ClientReport& c : (*server)->clients()) poisoned += c.stats.poisoned_pages;
  EXPECT_GE(poisoned, 240u);
}

TEST(ServeHostileFile, CliServerSurvivesItsMemFileShrinking) {
  testing::TempDir dir;
  PatternBuffer file(kPages, 905);
  const std::string mem = dir.File("guest.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  const std::string sock = dir.File("uffd.sock");
  CliServer server;
  ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--no-background", "--json"}));
  ASSERT_TRUE(server.WaitListening());
  Victim victim;
  ASSERT_TRUE(victim.Start(sock, file));
  ASSERT_EQ(truncate(mem.c_str(), static_cast<off_t>(256 * Ps())), 0);
  EXPECT_EQ(victim.Finish(), 0);
  HonestClient after;
  ASSERT_TRUE(after.Start(sock, file, {{0, 256 * Ps()}}));
  ASSERT_TRUE(after.WaitFirstHalf());
  EXPECT_EQ(after.Finish(), 0);
  EXPECT_EQ(server.Stop(), 0) << server.err();  // not killed by SIGBUS
  EXPECT_NE(server.out().find("\"poisoned_pages\""), std::string::npos);
}

// A socket file nobody listens on.
void MakeStaleSocket(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  close(fd);
}

TEST(ServeHostileFile, SocketPathsThatAreNotStaleSocketsAreRefused) {
  testing::TempDir dir;
  PatternBuffer file(64, 906);
  const std::string mem = dir.File("guest.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  const std::string content = Slurp(mem);
  ASSERT_EQ(mkdir(dir.File("a-dir").c_str(), 0700), 0);
  ASSERT_EQ(symlink(mem.c_str(), dir.File("link").c_str()), 0);
  for (const std::string& path : {mem, dir.File("a-dir"), dir.File("link")}) {
    CliServer s;
    ASSERT_TRUE(s.Spawn({"--socket", path, "--mem-file", mem}));
    EXPECT_EQ(s.Wait(), 1) << path;
    EXPECT_NE(s.err().find(path), std::string::npos) << s.err();
    EXPECT_NE(s.err().find("refusing to replace it"), std::string::npos) << s.err();
  }
  EXPECT_EQ(Slurp(mem), content);  // the memory file was not touched
  struct stat st;
  ASSERT_EQ(lstat(dir.File("link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));

  // Nor is a file where the server would put its handover control socket
  // (PATH.handover, serve --take-over).
  const std::string taken = dir.File("h.sock");
  {
    const int fd =
        open((taken + ".handover").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ASSERT_EQ(write(fd, "keep", 4), 4);
    close(fd);
  }
  {
    CliServer h;
    ASSERT_TRUE(h.Spawn({"--socket", taken, "--mem-file", mem}));
    EXPECT_EQ(h.Wait(), 1);
    EXPECT_NE(h.err().find(taken + ".handover"), std::string::npos) << h.err();
    EXPECT_NE(h.err().find("refusing to replace it"), std::string::npos) << h.err();
  }
  EXPECT_EQ(Slurp(taken + ".handover"), "keep");
  EXPECT_NE(lstat(taken.c_str(), &st), 0);  // its own socket was removed

  // A live socket is not taken over; the first server keeps serving.
  const std::string sock = dir.File("uffd.sock");
  CliServer first;
  ASSERT_TRUE(first.Spawn({"--socket", sock, "--mem-file", mem, "--socket-mode", "0660"}));
  ASSERT_TRUE(first.WaitListening());
  ASSERT_EQ(stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  CliServer second;
  ASSERT_TRUE(second.Spawn({"--socket", sock, "--mem-file", mem}));
  EXPECT_EQ(second.Wait(), 1);
  EXPECT_NE(second.err().find("a server is listening on " + sock), std::string::npos)
      << second.err();
  HonestClient c;
  ASSERT_TRUE(c.Start(sock, file, {{0, 64 * Ps()}}));
  ASSERT_TRUE(c.WaitFirstHalf());
  EXPECT_EQ(c.Finish(), 0);
  // At exit the first removes the socket only if it is still its own: a
  // file put in its place stays.
  ASSERT_EQ(rename(sock.c_str(), dir.File("moved.sock").c_str()), 0);
  {
    const int fd = open(sock.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ASSERT_EQ(write(fd, "mine", 4), 4);
    close(fd);
  }
  EXPECT_EQ(first.Stop(), 0);
  EXPECT_EQ(Slurp(sock), "mine");

  // A stale socket is replaced, and removed at exit.
  const std::string stale = dir.File("stale.sock");
  MakeStaleSocket(stale);
  CliServer third;
  ASSERT_TRUE(third.Spawn({"--socket", stale, "--mem-file", mem}));
  ASSERT_TRUE(third.WaitListening());
  HonestClient d;
  ASSERT_TRUE(d.Start(stale, file, {{0, 64 * Ps()}}));
  ASSERT_TRUE(d.WaitFirstHalf());
  EXPECT_EQ(d.Finish(), 0);
  EXPECT_EQ(third.Stop(), 0);
  EXPECT_NE(lstat(stale.c_str(), &st), 0);
}

TEST(ServeHostileFile, OutOfDescriptorsBacksOffLogsOnceAndRecovers) {
  testing::TempDir dir;
  PatternBuffer file(kPages, 907);
  const std::string mem = dir.File("guest.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  const std::string sock = dir.File("uffd.sock");
  testing::FaultEnv env;
  env.Inject(testing::Op::kAccept, {EMFILE, 0, 0, -1});
  EventLog log;
  ServeOptions so;
  so.on_event = log.Fn();
  auto source = OpenMemFileSource(mem, MemFileAccess::kPread);
  ASSERT_TRUE(source.ok());
  auto server = StartPageServer(sock, *source, so, &env);
  ASSERT_TRUE(server.ok());
  // Taken before the client connects, so before the first accept attempt
  // (the server accepts only once a connection is there): a bound measured
  // after the first failure's event would be short by the event's latency.
  const auto first = std::chrono::steady_clock::now();
  HonestClient c;  // connects (the backlog holds it) and waits to be accepted
  ASSERT_TRUE(c.Start(sock, file, {{0, 256 * Ps()}}));
  ASSERT_TRUE(log.WaitFor(ServeEvent::Kind::kLimit, 1));
  // Retries are 10, 20, 40 ms apart: the fourth attempt cannot come sooner
  // than 70 ms after the first (a spinning loop would make it at once).
  while (env.Calls(testing::Op::kAccept) < 4) std::this_thread::yield();
  EXPECT_GE(std::chrono::steady_clock::now() - first, std::chrono::milliseconds(70));
  EXPECT_EQ(log.Count(ServeEvent::Kind::kLimit), 1u);  // one line per episode
  const ServeEvent e = log.All()[0];
  EXPECT_EQ(e.limit, "descriptors");
  EXPECT_EQ(e.reason.err(), EMFILE);
  env.Clear();  // descriptors are back: the waiting client is accepted
  ASSERT_TRUE(c.WaitFirstHalf());
  EXPECT_EQ(c.Finish(), 0);
  EXPECT_GE((*server)->accept_failures(), 4u);
}

TEST(ServeHostileFile, RealDescriptorExhaustionIsSurvived) {
  testing::TempDir dir;
  PatternBuffer file(kPages, 908);
  const std::string mem = dir.File("guest.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  const std::string sock = dir.File("uffd.sock");
  CliServer server;
  ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--max-pending", "1000"}, 64));
  ASSERT_TRUE(server.WaitListening());
  std::vector<int> idle;
  for (int i = 0; i < 100; ++i) idle.push_back(Connect(sock));  // more than it can hold
  ASSERT_TRUE(server.WaitStderr("limit=descriptors"));
  for (int fd : idle) close(fd);  // it sees them leave and frees their slots
  // Every one of them refused (peer gone) first: the client then comes to
  // a server that has its descriptors back, which is what this test is
  // about (it once connected while the server was still accepting the dead
  // connections left in its backlog).
  ASSERT_TRUE(server.WaitStderr("event=refused", idle.size())) << server.err();
  HonestClient c;
  ASSERT_TRUE(c.Start(sock, file, {{0, 256 * Ps()}}));
  ASSERT_TRUE(c.WaitFirstHalf());
  EXPECT_EQ(c.Finish(), 0);
  EXPECT_EQ(server.Stop(), 0) << server.err();
}

}  // namespace
}  // namespace pagewise::hostile
