// `pagewise serve --metrics ADDR`: Prometheus text over HTTP on a loopback
// address, scraped while a client is served; counters and per-class
// latency histograms agree with what the client did; only loopback
// addresses are accepted.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "pagewise/serve.h"
#include "restore/restore_testing.h"
#include "sys/child_process.h"
#include "testing/cli_runner.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::PatternBuffer;
using testing::Ps;

constexpr int kFailureTimeoutMs = 120000;  // failure detector only

// GET `path` from 127.0.0.1:port; the whole response.
std::string HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  const int port = std::stoi(address.substr(colon + 1));
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: test\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return "";
  }
  std::string out;
  char buf[4096];
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, kFailureTimeoutMs) != 1) break;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// "name{labels} value" lines of a Prometheus text body.
std::map<std::string, double> Samples(const std::string& body) {
  std::map<std::string, double> out;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

TEST(ServeMetrics, ScrapedWhileServingAClient) {
  testing::TempDir dir;
  PatternBuffer file(512, 31);
  const std::string mem = dir.File("guest.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  const std::string sock = dir.File("uffd.sock");
  auto server = sys::ChildProcess::Spawn(
      PAGEWISE_CLI_PATH, {"serve", "--socket", sock, "--mem-file", mem, "--no-background",
                          "--window", "4", "--metrics", "127.0.0.1:0", "--quiet"});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  ASSERT_TRUE((*server)->WaitForLine("listening on", kFailureTimeoutMs).ok());
  std::string line;
  ASSERT_TRUE((*server)->WaitForLine("metrics on http://", kFailureTimeoutMs, &line).ok());
  const size_t at = line.find("http://") + 7;
  const std::string address = line.substr(at, line.find("/metrics") - at);

  void* m = mmap(nullptr, file.size(), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  char* guest = static_cast<char*>(m);
  {
    auto client =
        LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(guest), file.size(), 0, Ps()}});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    // 40 pages in 10 windows of 4; every 5th page of the pattern is zero.
    for (size_t i = 0; i < 40; ++i) ASSERT_TRUE(file.Matches(guest + i * Ps(), i));

    // A fault's books are complete only after its thread was woken (the
    // fill ends, then it is counted): scrape until the last one is in.
    std::string resp, body;
    std::map<std::string, double> s;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(kFailureTimeoutMs);
    do {
      resp = HttpGet(address, "/metrics");
      ASSERT_EQ(resp.rfind("HTTP/1.1 200", 0), 0u) << resp;
      body = resp.substr(resp.find("\r\n\r\n") + 4);
      s = Samples(body);
    } while (s["pagewise_fault_latency_seconds_count{class=\"demand\"}"] < 10 &&
             std::chrono::steady_clock::now() < deadline);
    EXPECT_NE(resp.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
    EXPECT_NE(body.find("# TYPE pagewise_fault_latency_seconds histogram"), std::string::npos);
    EXPECT_EQ(s["pagewise_clients_active"], 1);
    EXPECT_EQ(s["pagewise_demand_faults_total"], 10);
    EXPECT_EQ(s["pagewise_pages_installed_total{path=\"demand\"}"], 40);
    EXPECT_EQ(s["pagewise_zero_pages_total"], 8);
    EXPECT_EQ(s["pagewise_bytes_copied_total{path=\"demand\"}"], 32.0 * Ps());
    // The demand histogram: cumulative buckets, +Inf equal to the count.
    const std::string h = "pagewise_fault_latency_seconds";
    const double count = s[h + "_count{class=\"demand\"}"];
    EXPECT_EQ(count, 10);
    EXPECT_EQ(s[h + "_bucket{class=\"demand\",le=\"+Inf\"}"], count);
    std::vector<std::pair<double, double>> buckets;  // (le, cumulative count)
    const std::string prefix = h + "_bucket{class=\"demand\",le=\"";
    for (const auto& [k, v] : s) {
      if (k.rfind(prefix, 0) != 0 || k.find("+Inf") != std::string::npos) continue;
      buckets.emplace_back(std::stod(k.substr(prefix.size())), v);
    }
    std::sort(buckets.begin(), buckets.end());
    ASSERT_EQ(buckets.size(), static_cast<size_t>(LatencyHistogram::kBuckets - 1));
    for (size_t i = 1; i < buckets.size(); ++i) {
      EXPECT_GE(buckets[i].second, buckets[i - 1].second) << "le " << buckets[i].first;
    }
    EXPECT_LE(buckets.back().second, count);
    EXPECT_GT(s[h + "_sum{class=\"demand\"}"], 0);
    EXPECT_EQ(HttpGet(address, "/other").rfind("HTTP/1.1 404", 0), 0u);
  }  // the client makes everything resident, then disconnects
  munmap(guest, file.size());
  ASSERT_TRUE((*server)->Signal(SIGTERM).ok());
  Result<int> code = (*server)->Wait();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

TEST(ServeMetrics, OnlyLoopbackAddresses) {
  testing::TempDir dir;
  PatternBuffer file(16, 32);
  const std::string mem = dir.File("guest.mem");
  ASSERT_TRUE(file.WriteFile(mem));
  for (const char* addr : {"0.0.0.0:0", "10.1.2.3:9000", "[::]:0", "nonsense", "127.0.0.1:x"}) {
    testing::CliResult r = testing::RunCli(
        PAGEWISE_CLI_PATH,
        {"serve", "--socket", dir.File("s.sock"), "--mem-file", mem, "--metrics", addr});
    EXPECT_NE(r.exit_code, 0) << addr;
    EXPECT_NE(r.err.find("loopback"), std::string::npos) << addr << ": " << r.err;
  }
}

}  // namespace
}  // namespace pagewise
