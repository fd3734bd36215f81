// Serve handover with active clients: a `pagewise serve` replaced by
// `pagewise serve --take-over` while four LazyClients fault pages in (one
// also drops a range meanwhile); every page is exact (dropped ones zero),
// nobody hangs, new clients reach the successor on the same socket, the
// longest stall is reported. A successor serving other bytes is refused
// and the old server serves on.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/serve.h"
#include "restore/restore_testing.h"
#include "sys/child_process.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::PatternBuffer;
using testing::Ps;

constexpr int kFailureTimeoutMs = 120000;  // failure detector only
constexpr size_t kPages = 4096;
constexpr int kClients = 4;
constexpr size_t kDropFirst = 1000, kDropPages = 64;  // client 3 drops these

// Starts `pagewise serve args...` and waits until it listens; *took (if
// not null) receives its "took over" line.
Result<std::unique_ptr<sys::ChildProcess>> Serve(const std::vector<std::string>& args,
                                                 std::string* took = nullptr) {
  std::vector<std::string> all = {"serve"};
  all.insert(all.end(), args.begin(), args.end());
  PW_ASSIGN_OR_RETURN(auto p, sys::ChildProcess::Spawn(PAGEWISE_CLI_PATH, all));
  if (took != nullptr) PW_RETURN_IF_ERROR(p->WaitForLine("took over", kFailureTimeoutMs, took));
  PW_RETURN_IF_ERROR(p->WaitForLine("listening on", kFailureTimeoutMs));
  return p;
}

// Counts down to zero; Wait() returns at zero.
class Countdown {
 public:
  explicit Countdown(int n) : n_(n) {}
  void Done() {
    std::lock_guard<std::mutex> lk(mu_);
    if (--n_ == 0) cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return n_ <= 0; });
  }
  bool done() {
    std::lock_guard<std::mutex> lk(mu_);
    return n_ <= 0;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
};

struct ClientRun {
  size_t wrong = 0;
  double max_read_ms = 0;
  Status status;
};

// One client: reads every page in a random order. After half of them it
// tells `half`, then keeps faulting pages in while the handover runs (until
// `go` says it is done, or a quarter is left), waits for `go`, and reads
// the rest from the successor. The last client drops [kDropFirst,
// +kDropPages) at half time.
void RunClient(const std::string& sock, const PatternBuffer& file, int id, Countdown* half,
               Countdown* go, ClientRun* out) {
  void* m = mmap(nullptr, file.size(), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char* mem = static_cast<char*>(m);
  {
    auto client =
        LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(mem), file.size(), 0, Ps()}});
    if (!client.ok()) {
      out->status = client.status();
      half->Done();
      munmap(mem, file.size());
      return;
    }
    std::vector<size_t> order(kPages);
    for (size_t i = 0; i < kPages; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937_64(static_cast<uint64_t>(id)));
    std::vector<char> page(Ps());
    const bool dropper = id == kClients - 1;
    for (size_t k = 0; k < kPages; ++k) {
      if (k == kPages / 2) {
        if (dropper) madvise(mem + kDropFirst * Ps(), kDropPages * Ps(), MADV_DONTNEED);
        half->Done();
      }
      if (k >= kPages / 2 && k < kPages * 3 / 4 && go->done()) k = kPages * 3 / 4;
      if (k == kPages * 3 / 4) go->Wait();
      const size_t i = order[k];
      const auto t0 = std::chrono::steady_clock::now();
      std::memcpy(page.data(), mem + i * Ps(), Ps());
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      out->max_read_ms = std::max(out->max_read_ms, ms);
      const bool dropped =
          dropper && k >= kPages / 2 && i >= kDropFirst && i < kDropFirst + kDropPages;
      // A page of the dropped range read before the drop held data; after
      // it, it must read zero, never source data.
      if (dropped ? !testing::AllZero(page.data(), Ps()) : !file.Matches(page.data(), i)) {
        out->wrong++;
      }
    }
    out->status = (*client)->status();
  }  // makes the rest resident (nothing left), then disconnects
  munmap(mem, file.size());
}

TEST(ServeHandover, ReplacedUnderFourActiveClientsWithExactContent) {
  testing::TempDir dir;
  PatternBuffer file(kPages, 41);
  const std::string mem = dir.File("guest.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  const std::string sock = dir.File("uffd.sock");
  // No background fill: pages arrive only as the clients fault them, so
  // the restores are far from complete when the server is replaced.
  auto old_server =
      Serve({"--socket", sock, "--mem-file", mem, "--no-background", "--window", "2", "--quiet"});
  ASSERT_TRUE(old_server.ok()) << old_server.status().ToString();

  Countdown half(kClients), go(1);  // go: the successor serves
  std::vector<ClientRun> runs(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] { RunClient(sock, file, c, &half, &go, &runs[c]); });
  }
  half.Wait();  // every client is mid-restore, and keeps faulting
  std::string took;
  auto new_server = Serve({"--socket", sock, "--mem-file", mem, "--no-background", "--window", "2",
                           "--quiet", "--take-over"},
                          &took);
  go.Done();
  ASSERT_TRUE(new_server.ok()) << new_server.status().ToString();
  std::string line;
  ASSERT_TRUE((*old_server)->WaitForLine("handed over", kFailureTimeoutMs, &line).ok());
  Result<int> old_code = (*old_server)->Wait();
  ASSERT_TRUE(old_code.ok());
  EXPECT_EQ(*old_code, 0);
  for (auto& t : clients) t.join();
  double worst = 0;
  for (int c = 0; c < kClients; ++c) {
    EXPECT_TRUE(runs[c].status.ok()) << "client " << c << ": " << runs[c].status.ToString();
    EXPECT_EQ(runs[c].wrong, 0u) << "client " << c;
    worst = std::max(worst, runs[c].max_read_ms);
  }
  EXPECT_NE(took.find("took over 4 client(s)"), std::string::npos) << took;
  EXPECT_NE(took.find("longest stall"), std::string::npos) << took;
  std::printf(
      "handover: old: %s\nhandover: new: %s\nhandover: longest page read seen by a "
      "client %.3f ms\n",
      line.c_str(), took.c_str(), worst);
  RecordProperty("longest_client_read_ms", std::to_string(worst));

  // A new client reaches the successor through the same socket.
  ClientRun late;
  Countdown late_half(1), late_go(0);
  RunClient(sock, file, 0, &late_half, &late_go, &late);
  EXPECT_TRUE(late.status.ok()) << late.status.ToString();
  EXPECT_EQ(late.wrong, 0u);
  ASSERT_TRUE((*new_server)->Signal(SIGTERM).ok());
  Result<int> new_code = (*new_server)->Wait();
  ASSERT_TRUE(new_code.ok());
  EXPECT_EQ(*new_code, 0);
}

TEST(ServeHandover, SuccessorWithOtherBytesIsRefusedAndTheOldServerServesOn) {
  testing::TempDir dir;
  PatternBuffer file(512, 42), other(512, 43);
  const std::string mem = dir.File("guest.mem"), mem2 = dir.File("other.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  ASSERT_TRUE(other.WriteFile(mem2));
  const std::string sock = dir.File("uffd.sock");
  auto old_server = Serve({"--socket", sock, "--mem-file", mem, "--no-background", "--quiet"});
  ASSERT_TRUE(old_server.ok()) << old_server.status().ToString();
  void* m = mmap(nullptr, file.size(), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char* guest = static_cast<char*>(m);
  auto client =
      LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(guest), file.size(), 0, Ps()}});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  for (size_t i = 0; i < 100; ++i) ASSERT_TRUE(file.Matches(guest + i * Ps(), i));
  auto r = sys::ChildProcess::Spawn(PAGEWISE_CLI_PATH,
                                    {"serve", "--socket", sock, "--mem-file", mem2, "--take-over"});
  ASSERT_TRUE(r.ok());
  Result<int> code = (*r)->Wait();
  ASSERT_TRUE(code.ok());
  EXPECT_NE(*code, 0) << "a successor with other bytes must be refused";
  // The old server still serves, with the right bytes.
  for (size_t i = 100; i < 512; ++i) ASSERT_TRUE(file.Matches(guest + i * Ps(), i)) << i;
  EXPECT_TRUE((*client)->status().ok());
  client->reset();
  munmap(guest, file.size());
  ASSERT_TRUE((*old_server)->Signal(SIGTERM).ok());
  Result<int> old_code = (*old_server)->Wait();
  ASSERT_TRUE(old_code.ok());
  EXPECT_EQ(*old_code, 0);
}

}  // namespace
}  // namespace pagewise
