// What a Firecracker-style client sees when `pagewise serve` is SIGKILLed
// mid-restore: a plain client (testing::VmmClient) that keeps its uffd is
// frozen (its access sleeps in the kernel, no zeros), one that closed its
// uffd reads zeros (the danger LazyClient exists for), and a LazyClient
// gets SIGBUS for every page not yet served, never zeros, also for a fault
// in flight. The server runs as the built binary (PAGEWISE_CLI_PATH) so
// that it can be killed.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "serve_firecracker_util.h"
#include "sys/env.h"

namespace pagewise::firecracker {
namespace {

TEST(ServeFirecracker, PlainClientKeepingItsUffdFreezesWhenTheServerDies) {
  testing::TempDir dir;
  PatternBuffer file(256, 106);
  const std::string mem = MemFile(dir, file);
  const std::string sock = dir.File("uffd.sock");
  CliServer server;
  ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--no-background", "--quiet"}));
  ASSERT_TRUE(server.WaitListening());
  VmmClient c;
  ASSERT_EQ(c.Connect(sock, {{0, 256 * Ps()}}), "");
  for (size_t i = 0; i < 32; ++i) ASSERT_TRUE(file.Matches(c.mem(0) + i * Ps(), i));
  server.Stop(SIGKILL);
  // The client still holds the uffd: page 200 is neither zero nor served;
  // the touching thread sleeps in the kernel.
  std::atomic<pid_t> tid{0};
  std::atomic<bool> finished{false};
  std::vector<char> page(Ps());
  std::thread reader([&] {
    tid = gettid();
    std::memcpy(page.data(), c.mem(0) + 200 * Ps(), Ps());
    finished = true;
  });
  while (tid.load() == 0) sched_yield();
  EXPECT_TRUE(WaitBlockedInUffd(tid.load(), finished)) << "the access did not block";
  // Resolve it ourselves (we hold the uffd) so that the thread can finish.
  const FillResult r =
      Env::Default()->UffdCopy(c.uffd(), reinterpret_cast<uint64_t>(c.mem(0) + 200 * Ps()),
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
  CliServer server;
  ASSERT_TRUE(server.Spawn({"--socket", sock, "--mem-file", mem, "--no-background", "--quiet"}));
  ASSERT_TRUE(server.WaitListening());
  VmmClient c;
  ASSERT_EQ(c.Connect(sock, {{0, 256 * Ps()}}), "");
  c.CloseUffd();  // the server now holds the only reference
  for (size_t i = 0; i < 32; ++i) ASSERT_TRUE(file.Matches(c.mem(0) + i * Ps(), i));
  server.Stop(SIGKILL);
  // The kernel unregistered the ranges with the last reference: the danger
  // LazyClient exists for. Page 200 holds data in the file, yet reads zero.
  std::vector<char> page(Ps());
  auto read_page = std::async(std::launch::async,
                              [&] { std::memcpy(page.data(), c.mem(0) + 200 * Ps(), Ps()); });
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
    CliServer server;
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
      ASSERT_TRUE(server.Pause());
      pending = std::thread([&] {
        tid = gettid();
        std::vector<char> p(Ps());
        pending_bus = testing::ReadPageOrSigbus(guest + 300 * Ps(), p.data());
        finished = true;
      });
      while (tid.load() == 0) sched_yield();
      was_blocked = WaitBlockedInUffd(tid.load(), finished);
    }
    server.Stop(SIGKILL);
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

}  // namespace
}  // namespace pagewise::firecracker
