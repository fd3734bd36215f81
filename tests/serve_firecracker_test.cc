// The page server against clients written only from Firecracker's
// documented UFFD handshake (testing::VmmClient: create a userfaultfd
// requiring EVENT_REMOVE, register guest memory in MISSING mode, connect,
// send ONE message: the fd by SCM_RIGHTS plus a JSON array of regions, then
// touch guest memory): flat memory file and image sources, several clients
// at once, a client killed mid-restore, malformed and silent handshakes, a
// client racing the server on its own uffd, and the built server recording
// a trace and prefetching it. What clients see when the server dies:
// serve_firecracker_death_test.cc; LazyClient: serve_lazy_client_test.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/image.h"
#include "serve_firecracker_util.h"
#include "sys/env.h"

namespace pagewise::firecracker {
namespace {

TEST(ServeFirecracker, FlatMemoryFileIsServedExactly) {
  testing::TempDir dir;
  PatternBuffer file(512, 101);
  const std::string sock = dir.File("uffd.sock");
  ServeOptions so;
  so.fill.background_fill = false;  // every page the client reads is a demand fault
  auto server = ServeMemFile(dir, file, sock, so);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  VmmClient c;
  ASSERT_EQ(c.Connect(sock, {{0, 200 * Ps()}, {256 * Ps(), 256 * Ps()}}), "");
  EXPECT_EQ(Mismatches(c, file, 1), 0u);
  EXPECT_EQ(Mismatches(c, file, 0), 0u);
  // A balloon-style drop: the server reads the REMOVE; the pages read zero.
  ASSERT_EQ(madvise(c.mem(1) + 10 * Ps(), 20 * Ps(), MADV_DONTNEED), 0);
  for (size_t i = 10; i < 30; ++i) EXPECT_TRUE(testing::AllZero(c.mem(1) + i * Ps(), Ps()));
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

  VmmClient c;
  ASSERT_EQ(c.Connect(sock, {{0, 384 * Ps()}}, {.legacy_page_size_key = true}), "");
  size_t bad = 0;
  for (size_t i = 0; i < 384; ++i) {
    const char* p = c.mem(0) + i * Ps();
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
                              std::vector<VmmRegion> layout, int go_fd) {
  char go;
  if (read(go_fd, &go, 1) != 1) _exit(3);  // start together
  VmmClient c;
  if (!c.Connect(sock, layout).empty()) _exit(2);
  size_t bad = 0;
  for (size_t r = 0; r < layout.size(); ++r) bad += Mismatches(c, file, r);
  _exit(bad == 0 ? 0 : 1);
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
  VmmClient survivor;
  ASSERT_EQ(survivor.Connect(sock, {{0, 512 * Ps()}}), "");
  for (size_t i = 0; i < 256; ++i) ASSERT_TRUE(file.Matches(survivor.mem(0) + i * Ps(), i));

  int ready[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  const pid_t victim = fork();
  ASSERT_GE(victim, 0);
  if (victim == 0) {
    VmmClient c;
    if (!c.Connect(sock, {{0, 512 * Ps()}}).empty()) _exit(2);
    for (size_t i = 0; i < 100; ++i) {
      if (!file.Matches(c.mem(0) + i * Ps(), i)) _exit(1);
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
  EXPECT_EQ(Mismatches(survivor, file, 0), 0u);
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
    VmmClient c;
    ASSERT_EQ(c.Connect(sock, {{0, file.size()}}), "");
    std::thread filler([&] {
      for (size_t i = 0; i < file.pages(); i += 3) {
        // EEXIST (the server was first) is expected; anything else is not.
        const FillResult r =
            Env::Default()->UffdCopy(c.uffd(), reinterpret_cast<uint64_t>(c.mem(0) + i * Ps()),
                                     reinterpret_cast<uint64_t>(file.data() + i * Ps()), Ps(), 0);
        EXPECT_TRUE(r.ok() || r.error == EEXIST || r.error == EAGAIN) << r.error;
      }
    });
    EXPECT_EQ(Mismatches(c, file, 0), 0u);
    filler.join();
    EXPECT_EQ(Mismatches(c, file, 0), 0u);
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
  VmmClient c;
  ASSERT_EQ(c.Connect(sock, {{0, file.size()}}), "");
  EXPECT_EQ(Mismatches(c, file, 0), 0u);
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

TEST(ServeFirecracker, CliRecordsATraceAndPrefetchesIt) {
  testing::TempDir dir;
  PatternBuffer file(512, 112);
  const std::string mem = MemFile(dir, file);
  const std::string trace = TracePathFor(mem);
  const std::string sock = dir.File("uffd.sock");
  const std::vector<size_t> touched = {400, 7, 401, 300, 7};
  {
    CliServer server;
    ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--no-background", "--window",
                              "1", "--record", trace, "--clients", "1", "--quiet"}));
    ASSERT_TRUE(server.WaitListening());
    VmmClient c;
    ASSERT_EQ(c.Connect(sock, {{0, file.size()}}), "");
    for (size_t p : touched) ASSERT_TRUE(file.Matches(c.mem(0) + p * Ps(), p));
    c.Close();
    ASSERT_EQ(server.Wait(), 0) << server.err();  // it exits after its one client
  }
  Result<WorkingSetTrace> t = ReadTrace(trace);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->entries.size(), 4u);
  const size_t want[] = {400, 7, 401, 300};
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(t->entries[i].offset, want[i] * Ps());
  EXPECT_EQ(t->source_size, file.size());

  CliServer server;
  ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--window", "1", "--batch", "8",
                            "--prefetch", trace, "--clients", "1", "--json", "--quiet"}));
  ASSERT_TRUE(server.WaitListening());
  VmmClient c;
  ASSERT_EQ(c.Connect(sock, {{0, file.size()}}), "");
  EXPECT_EQ(Mismatches(c, file, 0), 0u);
  c.Close();
  ASSERT_EQ(server.Wait(), 0) << server.err();
  // Its stdout after the "listening on" line.
  const std::string out = server.out().substr(server.out().find('\n') + 1);
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

}  // namespace
}  // namespace pagewise::firecracker
