// LazyClient (pagewise/serve.h) against an in-process page server: Populate()
// makes everything resident, Connect with wait_ready returns once the
// prefetch list is installed (and at once without one), a refused handshake
// is an error from Connect, and a forked child of the client is served too
// (EVENT_FORK).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "serve_firecracker_util.h"

namespace pagewise::firecracker {
namespace {

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

}  // namespace
}  // namespace pagewise::firecracker
