// The page server against clients written only from Firecracker's
// documented UFFD handshake (create a userfaultfd requiring EVENT_REMOVE,
// register guest memory in MISSING mode, connect, send ONE message: the fd
// by SCM_RIGHTS plus a JSON array of regions, then touch guest memory):
// flat memory file and image sources, several clients at once, a client
// killed mid-restore, and what a client sees when the server is SIGKILLed
// mid-restore (plain client: frozen, or zeros if it closed its fd;
// LazyClient: SIGBUS, never zeros). Servers run in-process on threads, or
// as the built binary (PAGEWISE_CLI_PATH) when they must be killed.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
extern "C" {  // glibc 2.36's header lacks the C++ guard
#include <sys/pidfd.h>
}
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "restore/restore_testing.h"
#include "sys/env.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::PatternBuffer;
using testing::Ps;

constexpr int kFailureTimeoutMs = 120000;  // failure detectors only
constexpr Duration kFailureTimeout = std::chrono::milliseconds(kFailureTimeoutMs);
constexpr uint64_t kFeatureEventRemove = 1ULL << 3;  // UFFD_FEATURE_EVENT_REMOVE
constexpr uint64_t kRegisterMissing = 1ULL << 0;     // UFFDIO_REGISTER_MODE_MISSING

// ---- a Firecracker-style client, from the handshake description only -------

struct Layout {
  uint64_t offset;  // in the memory file
  uint64_t size;
};

struct FcClient {
  std::vector<char*> mem;
  std::vector<Layout> layout;
  int uffd = -1;
  int sock = -1;

  // Maps guest memory, creates and registers the uffd, connects and sends
  // the handshake. `kib_field` uses the old "page_size_kib" name.
  bool Connect(const std::string& socket, const std::vector<Layout>& l, bool kib_field = false) {
    Env* env = Env::Default();
    layout = l;
    Result<int> fd = env->UffdCreate(O_CLOEXEC | O_NONBLOCK);
    if (!fd.ok()) return false;
    uffd = *fd;
    if (!env->UffdApi(uffd, kFeatureEventRemove, nullptr, nullptr).ok()) return false;
    std::string body = "[";
    for (size_t i = 0; i < l.size(); ++i) {
      void* p = mmap(nullptr, l[i].size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) return false;
      mem.push_back(static_cast<char*>(p));
      const uint64_t addr = reinterpret_cast<uint64_t>(p);
      if (!env->UffdRegister(uffd, addr, l[i].size, kRegisterMissing, nullptr).ok()) return false;
      body += std::string(i ? "," : "") + "{\"base_host_virt_addr\":" + std::to_string(addr) +
              ",\"size\":" + std::to_string(l[i].size) +
              ",\"offset\":" + std::to_string(l[i].offset) +
              (kib_field ? ",\"page_size_kib\":" : ",\"page_size\":") + std::to_string(Ps()) + "}";
    }
    body += "]";
    Result<int> s = env->UnixConnect(socket);
    if (!s.ok()) return false;
    sock = *s;
    Result<size_t> sent = env->SendWithFd(sock, body.data(), body.size(), uffd);
    return sent.ok() && *sent == body.size();
  }

  // Pages of guest region r that do not hold the file's content.
  size_t Mismatches(const PatternBuffer& file, size_t r) const {
    size_t bad = 0;
    const size_t first = layout[r].offset / Ps();
    for (size_t i = 0; i < layout[r].size / Ps(); ++i) {
      bad += !file.Matches(mem[r] + i * Ps(), first + i);
    }
    return bad;
  }

  void Close() {
    if (sock >= 0) close(sock);
    if (uffd >= 0) close(uffd);
    for (size_t r = 0; r < mem.size(); ++r) munmap(mem[r], layout[r].size);
    sock = uffd = -1;
    mem.clear();
  }
};

// ---- the server binary -------------------------------------------------------

struct ServerProcess {
  pid_t pid = -1;
  int out = -1;  // its stdout

  bool Spawn(const std::vector<std::string>& args) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
    std::vector<std::string> argv_s = {PAGEWISE_CLI_PATH, "serve"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid, PAGEWISE_CLI_PATH, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    out = p[0];
    return rc == 0;
  }

  // Waits for the "listening" line (the socket exists once it is printed).
  bool WaitListening() {
    std::string line;
    char c;
    while (line.find('\n') == std::string::npos) {
      struct pollfd pf = {out, POLLIN, 0};
      if (poll(&pf, 1, kFailureTimeoutMs) != 1 || read(out, &c, 1) != 1) return false;
      line += c;
    }
    return line.find("listening on") != std::string::npos;
  }

  void Kill(int sig) { kill(pid, sig); }

  // The rest of its stdout, up to end of stream.
  std::string ReadRest() {
    std::string all;
    char buf[4096];
    for (;;) {
      struct pollfd pf = {out, POLLIN, 0};
      if (poll(&pf, 1, kFailureTimeoutMs) != 1) break;
      const ssize_t n = read(out, buf, sizeof(buf));
      if (n <= 0) break;
      all.append(buf, static_cast<size_t>(n));
    }
    return all;
  }

  // SIGSTOPs the server and waits until it is really stopped.
  bool Stop() {
    kill(pid, SIGSTOP);
    int st = 0;
    return waitpid(pid, &st, WUNTRACED) == pid && WIFSTOPPED(st);
  }

  int Reap() {
    int st = 0;
    waitpid(pid, &st, 0);
    close(out);
    pid = -1;
    return st;
  }

  ~ServerProcess() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      Reap();
    }
  }
};

std::string MemFile(const testing::TempDir& dir, const PatternBuffer& buf) {
  const std::string path = dir.File("guest.mem");
  EXPECT_TRUE(buf.WriteFile(path));
  return path;
}

// Writes `file` to `dir` as a flat memory file and serves it from an
// in-process PageServer listening on `sock`.
Result<std::unique_ptr<PageServer>> ServeMemFile(const testing::TempDir& dir,
                                                 const PatternBuffer& file, const std::string& sock,
                                                 const ServeOptions& so = {}) {
  PW_ASSIGN_OR_RETURN(std::shared_ptr<PageSource> source, OpenMemFileSource(MemFile(dir, file)));
  return PageServer::Start(sock, source, so);
}

// Spins (yielding) until `tid` sleeps in handle_userfault; false if the
// thread finished instead, or after the failure deadline.
bool WaitBlockedInUffd(pid_t tid, const std::atomic<bool>& finished) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kFailureTimeoutMs);
  while (!testing::ThreadBlockedInUffd(tid)) {
    if (finished.load() || std::chrono::steady_clock::now() > deadline) return false;
    sched_yield();
  }
  return true;
}

// ---- tests ---------------------------------------------------------------

TEST(ServeFirecracker, FlatMemoryFileIsServedExactly) {
  testing::TempDir dir;
  PatternBuffer file(512, 101);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_fill = false;  // every page the client reads is a demand fault
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  FcClient c;
  ASSERT_TRUE(c.Connect(sock, {{0, 200 * Ps()}, {256 * Ps(), 256 * Ps()}}));
  EXPECT_EQ(c.Mismatches(file, 1), 0u);
  EXPECT_EQ(c.Mismatches(file, 0), 0u);
  // A balloon-style drop: the server reads the REMOVE; the pages read zero.
  ASSERT_EQ(madvise(c.mem[1] + 10 * Ps(), 20 * Ps(), MADV_DONTNEED), 0);
  for (size_t i = 10; i < 30; ++i) EXPECT_TRUE(testing::AllZero(c.mem[1] + i * Ps(), Ps()));
  c.Close();

  ASSERT_TRUE((*server)->WaitClientsDone(1, kFailureTimeout).ok());
  const std::vector<ClientReport> clients = (*server)->clients();
  ASSERT_EQ(clients.size(), 1u);
  EXPECT_EQ(clients[0].pid, getpid());
  EXPECT_FALSE(clients[0].active);
  EXPECT_EQ(clients[0].status.code(), Code::kPeerGone) << clients[0].status.ToString();
  EXPECT_EQ(clients[0].regions.size(), 2u);
  EXPECT_GE(clients[0].stats.removes, 1u);
  EXPECT_GE(clients[0].stats.demand_faults, 1u);
  EXPECT_EQ((*server)->refused(), 0u);
}

TEST(ServeFirecracker, ImageIsServedAsItsFlatFile) {
  testing::TempDir dir;
  PatternBuffer file(384, 102);
  // An image of two regions of the flat file, [0, 128) and [192, 384);
  // pages [128, 192) are in no region and read as zero.
  const std::string image_path = dir.File("guest.pwimg");
  {
    auto w = ImageWriter::Create(image_path);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    for (auto [first, count] : {std::pair<size_t, size_t>{0, 128}, {192, 192}}) {
      Region r;
      r.length = count * Ps();
      r.page_size = static_cast<uint32_t>(Ps());
      r.kind = RegionKind::kFlat;
      r.offset = first * Ps();
      r.name = "guest@" + std::to_string(first);
      auto idx = (*w)->AddRegion(r);
      ASSERT_TRUE(idx.ok());
      ASSERT_TRUE((*w)->AddPages(*idx, 0, file.data() + first * Ps(), count * Ps()).ok());
    }
    ASSERT_TRUE((*w)->Commit().ok());
  }
  auto source = OpenImageSource(image_path);
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  ASSERT_EQ((*source)->size(), file.size());
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_batch_pages = 16;
  auto server = PageServer::Start(sock, *source, so);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  FcClient c;
  ASSERT_TRUE(c.Connect(sock, {{0, 384 * Ps()}}, /*kib_field=*/true));
  size_t bad = 0;
  for (size_t i = 0; i < 384; ++i) {
    const char* p = c.mem[0] + i * Ps();
    bad += (i >= 128 && i < 192) ? !testing::AllZero(p, Ps()) : !file.Matches(p, i);
  }
  EXPECT_EQ(bad, 0u);
  c.Close();
  ASSERT_TRUE((*server)->WaitClientsDone(1, kFailureTimeout).ok());
  const RestoreStats st = (*server)->clients()[0].stats;
  // Zero pages come from the image's classification (UFFDIO_ZEROPAGE).
  EXPECT_GE(st.zero_pages, 64u);
}

// Runs in a forked child: one Firecracker-style client that checks all of
// its guest memory; exits 0 when exact.
[[noreturn]] void ChildClient(const std::string& sock, const PatternBuffer& file,
                              std::vector<Layout> layout, int go_fd) {
  char go;
  if (read(go_fd, &go, 1) != 1) _exit(3);  // start together
  FcClient c;
  if (!c.Connect(sock, layout)) _exit(2);
  size_t bad = 0;
  for (size_t r = 0; r < layout.size(); ++r) bad += c.Mismatches(file, r);
  _exit(bad == 0 ? 0 : 1);
}

// The child's exit status (128+signal if killed); -1 if it did not end
// within the failure timeout.
int WaitExit(pid_t pid) {
  const int pidfd = pidfd_open(pid, 0);
  if (pidfd >= 0) {
    struct pollfd pf = {pidfd, POLLIN, 0};
    const int ready = poll(&pf, 1, kFailureTimeoutMs);
    close(pidfd);
    if (ready != 1) return -1;
  }
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST(ServeFirecracker, SeveralClientsAtOnce) {
  testing::TempDir dir;
  PatternBuffer file(1024, 103);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_batch_pages = 16;
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  constexpr int kClients = 4;
  int go[2];
  ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
  std::vector<pid_t> pids;
  for (int k = 0; k < kClients; ++k) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(go[1]);
      ChildClient(sock, file, {{k * 128 * Ps(), 512 * Ps()}, {900 * Ps(), 124 * Ps()}}, go[0]);
    }
    pids.push_back(pid);
  }
  close(go[0]);
  for (int k = 0; k < kClients; ++k) ASSERT_EQ(write(go[1], "g", 1), 1);
  close(go[1]);
  for (pid_t pid : pids) EXPECT_EQ(WaitExit(pid), 0);
  ASSERT_TRUE((*server)->WaitClientsDone(kClients, kFailureTimeout).ok());
  std::vector<pid_t> seen;
  for (const ClientReport& c : (*server)->clients()) {
    seen.push_back(c.pid);
    EXPECT_FALSE(c.active);
  }
  std::sort(seen.begin(), seen.end());
  std::sort(pids.begin(), pids.end());
  EXPECT_EQ(seen, pids);
}

TEST(ServeFirecracker, ClientKilledMidRestoreIsDroppedAlone) {
  testing::TempDir dir;
  PatternBuffer file(512, 104);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_fill = false;  // the victim is surely mid-restore
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok());

  // The survivor connects first, reads half, and waits.
  FcClient survivor;
  ASSERT_TRUE(survivor.Connect(sock, {{0, 512 * Ps()}}));
  for (size_t i = 0; i < 256; ++i) ASSERT_TRUE(file.Matches(survivor.mem[0] + i * Ps(), i));

  int ready[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  const pid_t victim = fork();
  ASSERT_GE(victim, 0);
  if (victim == 0) {
    FcClient c;
    if (!c.Connect(sock, {{0, 512 * Ps()}})) _exit(2);
    for (size_t i = 0; i < 100; ++i) {
      if (!file.Matches(c.mem[0] + i * Ps(), i)) _exit(1);
    }
    if (write(ready[1], "r", 1) != 1) _exit(4);
    for (;;) pause();
  }
  close(ready[1]);
  struct pollfd pf = {ready[0], POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, kFailureTimeoutMs), 1);
  char r;
  ASSERT_EQ(read(ready[0], &r, 1), 1);
  close(ready[0]);
  kill(victim, SIGKILL);
  EXPECT_EQ(WaitExit(victim), 128 + SIGKILL);

  // The victim is cleaned up; the survivor is still served.
  ASSERT_TRUE((*server)->WaitClientsDone(1, kFailureTimeout).ok());
  std::vector<ClientReport> clients = (*server)->clients();
  ASSERT_EQ(clients.size(), 2u);
  EXPECT_TRUE(clients[0].active);
  EXPECT_FALSE(clients[1].active);
  EXPECT_EQ(clients[1].pid, victim);
  EXPECT_EQ(clients[1].status.code(), Code::kPeerGone);
  EXPECT_EQ(survivor.Mismatches(file, 0), 0u);
  survivor.Close();
  ASSERT_TRUE((*server)->WaitClientsDone(2, kFailureTimeout).ok());
}

TEST(ServeFirecracker, MalformedHandshakesAreRefused) {
  testing::TempDir dir;
  PatternBuffer file(64, 105);
  const std::string sock = dir.File("uffd.sock");
  auto server = ServeMemFile(dir, file, sock);
  ASSERT_TRUE(server.ok());
  Env* env = Env::Default();
  auto send = [&](const std::string& body, int fd) {
    Result<int> s = env->UnixConnect(sock);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(env->SendWithFd(*s, body.data(), body.size(), fd).ok());
    // A refused client sees end of stream.
    struct pollfd pf = {*s, POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, kFailureTimeoutMs), 1);
    char c;
    EXPECT_EQ(read(*s, &c, 1), 0);
    close(*s);
  };
  send("[]", -1);  // no descriptor
  int efd = *env->EventfdCreate(0, 0);
  send("{\"not\":\"an array\"}", efd);
  send("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0}]", efd);  // no page size
  send("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":0,\"page_size\":2097152}]", efd);
  send("[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":1048576,\"page_size\":4096}]", efd);
  close(efd);
  EXPECT_EQ((*server)->refused(), 5u);
  EXPECT_EQ((*server)->last_refusal().code(), Code::kInvalidArgument);
  EXPECT_TRUE((*server)->clients().empty());
}

TEST(ServeFirecracker, PlainClientKeepingItsUffdFreezesWhenTheServerDies) {
  testing::TempDir dir;
  PatternBuffer file(256, 106);
  const std::string mem = MemFile(dir, file);
  const std::string sock = dir.File("uffd.sock");
  ServerProcess server;
  ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--no-background", "--quiet"}));
  ASSERT_TRUE(server.WaitListening());
  FcClient c;
  ASSERT_TRUE(c.Connect(sock, {{0, 256 * Ps()}}));
  for (size_t i = 0; i < 32; ++i) ASSERT_TRUE(file.Matches(c.mem[0] + i * Ps(), i));
  server.Kill(SIGKILL);
  server.Reap();
  // The client still holds the uffd: page 200 is neither zero nor served;
  // the touching thread sleeps in the kernel.
  std::atomic<pid_t> tid{0};
  std::atomic<bool> finished{false};
  std::vector<char> page(Ps());
  std::thread reader([&] {
    tid = gettid();
    std::memcpy(page.data(), c.mem[0] + 200 * Ps(), Ps());
    finished = true;
  });
  while (tid.load() == 0) sched_yield();
  EXPECT_TRUE(WaitBlockedInUffd(tid.load(), finished)) << "the access did not block";
  // Resolve it ourselves (we hold the uffd) so that the thread can finish.
  const FillResult r =
      Env::Default()->UffdCopy(c.uffd, reinterpret_cast<uint64_t>(c.mem[0] + 200 * Ps()),
                               reinterpret_cast<uint64_t>(file.data() + 200 * Ps()), Ps(), 0);
  EXPECT_TRUE(r.ok()) << r.error;
  reader.join();
  EXPECT_TRUE(file.Matches(page.data(), 200));
  c.Close();
}

TEST(ServeFirecracker, PlainClientThatClosedItsUffdReadsZerosWhenTheServerDies) {
  testing::TempDir dir;
  PatternBuffer file(256, 107);
  const std::string mem = MemFile(dir, file);
  const std::string sock = dir.File("uffd.sock");
  ServerProcess server;
  ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--no-background", "--quiet"}));
  ASSERT_TRUE(server.WaitListening());
  FcClient c;
  ASSERT_TRUE(c.Connect(sock, {{0, 256 * Ps()}}));
  close(c.uffd);  // the server now holds the only reference
  c.uffd = -1;
  for (size_t i = 0; i < 32; ++i) ASSERT_TRUE(file.Matches(c.mem[0] + i * Ps(), i));
  server.Kill(SIGKILL);
  server.Reap();
  // The kernel unregistered the ranges with the last reference: the danger
  // LazyClient exists for. Page 200 holds data in the file, yet reads zero.
  std::vector<char> page(Ps());
  auto read_page = std::async(std::launch::async,
                              [&] { std::memcpy(page.data(), c.mem[0] + 200 * Ps(), Ps()); });
  ASSERT_EQ(read_page.wait_for(std::chrono::milliseconds(kFailureTimeoutMs)),
            std::future_status::ready);
  EXPECT_FALSE(testing::AllZero(file.data() + 200 * Ps(), Ps()));
  EXPECT_TRUE(testing::AllZero(page.data(), Ps()));
  c.Close();
}

TEST(ServeFirecracker, LazyClientGetsSigbusNotZerosWhenTheServerIsKilled) {
  testing::TempDir dir;
  PatternBuffer file(512, 108);
  const std::string mem = MemFile(dir, file);
  const std::string sock = dir.File("uffd.sock");
  for (int rep = 0; rep < 2; ++rep) {
    ServerProcess server;
    ASSERT_TRUE(server.Spawn(
        {"--socket", sock, "--mem-file", mem, "--no-background", "--quiet", "--window", "4"}));
    ASSERT_TRUE(server.WaitListening());
    void* m = mmap(nullptr, file.size(), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(m, MAP_FAILED);
    char* guest = static_cast<char*>(m);
    std::atomic<int> lost_calls{0};
    LazyClientOptions lo;
    lo.on_server_lost = [&](const Status& s) {
      EXPECT_EQ(s.code(), Code::kPeerGone);
      lost_calls++;
    };
    auto client =
        LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(guest), file.size(), 0, Ps()}}, lo);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    EXPECT_TRUE((*client)->status().ok());
    std::vector<bool> served(file.pages(), false);
    for (size_t i = 0; i < 64; ++i) {
      ASSERT_TRUE(file.Matches(guest + i * Ps(), i));
      served[i] = true;
    }
    std::vector<char> page(Ps());
    std::atomic<pid_t> tid{0};
    std::atomic<bool> finished{false};
    bool pending_bus = false;
    bool was_blocked = false;
    std::thread pending;
    if (rep == 1) {
      // A fault in flight when the server dies: stop the server, let a
      // thread block on page 300, then kill.
      ASSERT_TRUE(server.Stop());
      pending = std::thread([&] {
        tid = gettid();
        std::vector<char> p(Ps());
        pending_bus = testing::ReadPageOrSigbus(guest + 300 * Ps(), p.data());
        finished = true;
      });
      while (tid.load() == 0) sched_yield();
      was_blocked = WaitBlockedInUffd(tid.load(), finished);
    }
    server.Kill(SIGKILL);
    server.Reap();
    ASSERT_TRUE((*client)->WaitServerLost(kFailureTimeout).ok());
    EXPECT_EQ((*client)->status().code(), Code::kPeerGone);
    EXPECT_EQ(lost_calls.load(), 1);
    if (rep == 1) {
      pending.join();
      EXPECT_TRUE(was_blocked);
      EXPECT_TRUE(pending_bus) << "the fault in flight must end in SIGBUS";
    }
    // Every page: either what the server served before it died, or SIGBUS.
    // Never zeros, never anything else.
    // (Reading pages 0..63 filled exactly the 4-page windows [0, 64).)
    size_t bus = 0, bad = 0;
    for (size_t i = 0; i < file.pages(); ++i) {
      if (testing::ReadPageOrSigbus(guest + i * Ps(), page.data())) {
        bus++;
        bad += served[i];  // a page we read before must still be there
      } else {
        bad += !served[i] || !file.Matches(page.data(), i);
      }
    }
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(bus, file.pages() - 64);
    EXPECT_GE((*client)->poisoned_pages(), bus);
    EXPECT_FALSE((*client)->Populate().ok());
    client->reset();
    // The poison outlives the client object (and its userfaultfd).
    EXPECT_TRUE(testing::ReadPageOrSigbus(guest + 400 * Ps(), page.data()));
    munmap(guest, file.size());
  }
}

TEST(ServeFirecracker, LazyClientPopulateMakesEverythingResident) {
  testing::TempDir dir;
  PatternBuffer file(256, 109);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_fill = false;
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok());
  void* m = mmap(nullptr, file.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  char* guest = static_cast<char*>(m);
  {
    auto client =
        LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(guest), file.size(), 0, Ps()}});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    ASSERT_TRUE((*client)->Populate().ok());
  }  // disconnects: the server drops us and closes its copy
  ASSERT_TRUE((*server)->WaitClientsDone(1, kFailureTimeout).ok());
  // Everything was resident before the disconnect: nothing reads as zero.
  size_t bad = 0;
  for (size_t i = 0; i < file.pages(); ++i) bad += !file.Matches(guest + i * Ps(), i);
  EXPECT_EQ(bad, 0u);
  munmap(guest, file.size());
}

// Pages of [p, p + pages * Ps()) that are resident (mapped), by mincore.
std::vector<bool> Resident(const char* p, size_t pages) {
  std::vector<unsigned char> v(pages);
  EXPECT_EQ(mincore(const_cast<char*>(p), pages * Ps(), v.data()), 0) << strerror(errno);
  std::vector<bool> out(pages);
  for (size_t i = 0; i < pages; ++i) out[i] = (v[i] & 1) != 0;
  return out;
}

// With wait_ready, Connect returns only after the server installed the
// prefetch list: those pages are resident before the program touches
// anything, and touching them takes no demand fault. Pages outside the
// list (no background fill) are not resident until touched.
TEST(ServeFirecracker, LazyClientWaitsForTheReadyByteWithItsWorkingSetResident) {
  testing::TempDir dir;
  PatternBuffer file(1024, 113);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_fill = false;
  for (uint64_t p = 100; p < 300; ++p) so.fill.prefetch.push_back(p * Ps());
  for (uint64_t p = 700; p < 710; ++p) so.fill.prefetch.push_back(p * Ps());
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok());
  void* m = mmap(nullptr, file.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  char* guest = static_cast<char*>(m);
  {
    LazyClientOptions lo;
    lo.wait_ready = kFailureTimeout;
    auto client =
        LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(guest), file.size(), 0, Ps()}}, lo);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    EXPECT_TRUE((*client)->ready());
    const std::vector<bool> res = Resident(guest, file.pages());
    size_t wrong = 0;
    for (size_t i = 0; i < file.pages(); ++i) {
      const bool want = (i >= 100 && i < 300) || (i >= 700 && i < 710);
      wrong += res[i] != want;
    }
    EXPECT_EQ(wrong, 0u) << "residency before any touch differs from the prefetch list";
    size_t bad = 0;
    for (size_t i = 100; i < 300; ++i) bad += !file.Matches(guest + i * Ps(), i);
    for (size_t i = 700; i < 710; ++i) bad += !file.Matches(guest + i * Ps(), i);
    EXPECT_EQ(bad, 0u);
    std::vector<ClientReport> c = (*server)->clients();
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].stats.demand_faults, 0u);
    EXPECT_TRUE(file.Matches(guest + 5 * Ps(), 5));  // outside the list: a demand fault
    c = (*server)->clients();
    EXPECT_GE(c[0].stats.demand_faults, 1u);
    ASSERT_TRUE((*client)->Populate().ok());
  }
  ASSERT_TRUE((*server)->WaitClientsDone(1, kFailureTimeout).ok());
  munmap(guest, file.size());
}

// Without a prefetch list the ready byte comes at once; a refused handshake
// (a region beyond the memory file) is an error from Connect, not a client
// that later hangs or reads zeros.
TEST(ServeFirecracker, LazyClientReadyAtOnceAndRefusalIsAnError) {
  testing::TempDir dir;
  PatternBuffer file(64, 127);
  const std::string sock = dir.File("uffd.sock");
  auto server = ServeMemFile(dir, file, sock);
  ASSERT_TRUE(server.ok());
  const size_t len = 2 * file.size();
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  const uint64_t a = reinterpret_cast<uint64_t>(m);
  LazyClientOptions lo;
  lo.wait_ready = kFailureTimeout;
  {
    auto client = LazyClient::Connect(sock, {{a, file.size(), 0, Ps()}}, lo);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    EXPECT_TRUE((*client)->ready());
    ASSERT_TRUE((*client)->Populate().ok());
  }
  ASSERT_TRUE((*server)->WaitClientsDone(1, kFailureTimeout).ok());
  munmap(m, len);
  m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto refused = LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(m), len, 0, Ps()}}, lo);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kPeerGone) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("refused"), std::string::npos);
  EXPECT_EQ((*server)->refused(), 1u);
  munmap(m, len);
}

TEST(ServeFirecracker, ForkedChildOfAClientIsServedToo) {
  testing::TempDir dir;
  PatternBuffer file(384, 110);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_fill = false;  // the child's pages are still missing at fork time
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok());
  void* m = mmap(nullptr, file.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  char* guest = static_cast<char*>(m);
  {
    // LazyClient asks for EVENT_FORK: the server gets the child's uffd.
    auto client =
        LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(guest), file.size(), 0, Ps()}});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    for (size_t i = 0; i < 100; ++i) ASSERT_TRUE(file.Matches(guest + i * Ps(), i));
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      size_t bad = 0;
      for (size_t i = 0; i < file.pages(); ++i) bad += !file.Matches(guest + i * Ps(), i);
      _exit(bad == 0 ? 0 : 1);
    }
    EXPECT_EQ(WaitExit(pid), 0);
    size_t bad = 0;
    for (size_t i = 0; i < file.pages(); ++i) bad += !file.Matches(guest + i * Ps(), i);
    EXPECT_EQ(bad, 0u);
  }
  ASSERT_TRUE((*server)->WaitClientsDone(1, kFailureTimeout).ok());
  const RestoreStats st = (*server)->clients()[0].stats;
  EXPECT_EQ(st.forks, 1u);
  EXPECT_EQ(st.spaces_total, 2u);
  munmap(guest, file.size());
}

TEST(ServeFirecracker, ClientFillingPagesItselfRacesTheServerHarmlessly) {
  // Both the client and the server install pages on the same uffd: each
  // side meets EEXIST for what the other did first and must carry on.
  testing::TempDir dir;
  PatternBuffer file(1024, 111);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_batch_pages = 8;
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok());
  for (int rep = 0; rep < 3; ++rep) {
    FcClient c;
    ASSERT_TRUE(c.Connect(sock, {{0, file.size()}}));
    std::thread filler([&] {
      for (size_t i = 0; i < file.pages(); i += 3) {
        // EEXIST (the server was first) is expected; anything else is not.
        const FillResult r =
            Env::Default()->UffdCopy(c.uffd, reinterpret_cast<uint64_t>(c.mem[0] + i * Ps()),
                                     reinterpret_cast<uint64_t>(file.data() + i * Ps()), Ps(), 0);
        EXPECT_TRUE(r.ok() || r.error == EEXIST || r.error == EAGAIN) << r.error;
      }
    });
    EXPECT_EQ(c.Mismatches(file, 0), 0u);
    filler.join();
    EXPECT_EQ(c.Mismatches(file, 0), 0u);
    c.Close();
    // Before this process maps and registers memory again (the next rep
    // may get the same addresses), the server must have dropped this
    // client: see "Reusing addresses" in serve.h.
    ASSERT_TRUE((*server)->WaitClientsDone(rep + 1, kFailureTimeout).ok());
  }
  for (const ClientReport& r : (*server)->clients()) {
    EXPECT_EQ(r.status.code(), Code::kPeerGone) << r.status.ToString();
  }
}

TEST(ServeFirecracker, CliRecordsATraceAndPrefetchesIt) {
  testing::TempDir dir;
  PatternBuffer file(512, 112);
  const std::string mem = MemFile(dir, file);
  const std::string trace = TracePathFor(mem);
  const std::string sock = dir.File("uffd.sock");
  const std::vector<size_t> touched = {400, 7, 401, 300, 7};
  {
    ServerProcess server;
    ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--no-background", "--window",
                              "1", "--record", trace, "--clients", "1", "--quiet"}));
    ASSERT_TRUE(server.WaitListening());
    FcClient c;
    ASSERT_TRUE(c.Connect(sock, {{0, file.size()}}));
    for (size_t p : touched) ASSERT_TRUE(file.Matches(c.mem[0] + p * Ps(), p));
    c.Close();
    server.ReadRest();  // it exits after its one client
    const int st = server.Reap();
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  }
  Result<WorkingSetTrace> t = ReadTrace(trace);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->entries.size(), 4u);
  const size_t want[] = {400, 7, 401, 300};
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(t->entries[i].offset, want[i] * Ps());
  EXPECT_EQ(t->source_size, file.size());

  ServerProcess server;
  ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--window", "1", "--batch", "8",
                            "--prefetch", trace, "--clients", "1", "--json", "--quiet"}));
  ASSERT_TRUE(server.WaitListening());
  FcClient c;
  ASSERT_TRUE(c.Connect(sock, {{0, file.size()}}));
  EXPECT_EQ(c.Mismatches(file, 0), 0u);
  c.Close();
  const std::string out = server.ReadRest();
  const int st = server.Reap();
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  ASSERT_EQ(j["clients"].size(), 1u);
  const nlohmann::json& c0 = j["clients"][0];
  // Every trace entry either installs its page (prefetch) or finds it in
  // place (waste): installed first by a fault (a late prefetch) or by the
  // demand thread's read-ahead of the client's sequential reads.
  EXPECT_EQ(c0["pages_prefetch"].get<uint64_t>() + c0["prefetch_waste_entries"].get<uint64_t>(), 4u)
      << out;
  EXPECT_LE(c0["prefetch_late_faults"].get<uint64_t>(),
            c0["prefetch_waste_entries"].get<uint64_t>())
      << out;
}

TEST(ServeFirecracker, SilentClientDelaysNobodyAndIsDroppedAfterTheHandshakeTimeout) {
  testing::TempDir dir;
  PatternBuffer file(128, 113);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.handshake_timeout = std::chrono::seconds(2);
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok());
  Result<int> silent = Env::Default()->UnixConnect(sock);
  ASSERT_TRUE(silent.ok());
  // A real client connecting after it is served at once.
  FcClient c;
  ASSERT_TRUE(c.Connect(sock, {{0, file.size()}}));
  EXPECT_EQ(c.Mismatches(file, 0), 0u);
  EXPECT_EQ((*server)->refused(), 0u);
  // The silent one is dropped when its time is up: it sees end of stream.
  struct pollfd pf = {*silent, POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, kFailureTimeoutMs), 1);
  char ch;
  EXPECT_EQ(read(*silent, &ch, 1), 0);
  close(*silent);
  EXPECT_EQ((*server)->refused(), 1u);
  EXPECT_EQ((*server)->last_refusal().code(), Code::kTimeout);
  c.Close();
}

}  // namespace
}  // namespace pagewise
