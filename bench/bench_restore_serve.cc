// `pagewise bench restore`, page-server rows:
//  - prefetch connect_to_working_set_ms vs no_prefetch: a LazyClient of an
//    in-process PageServer, from Connect (handshake and the wait for the
//    ready byte included) until it has read its working set;
//  - clients32 working_set_ms_p50 and server_rss_mib vs single_client: a
//    `pagewise serve` process (its memory is then its own) serving one
//    image to 32 clients that connect at once and read the same working set
//    (clones of one snapshot), beside the same with one client.
// Every byte a client read is compared with the content.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "bench_restore_common.h"
#include "pagewise/serve.h"
#include "sys/child_process.h"

namespace pagewise::bench {
namespace {

constexpr int kReadyWaitMs = 120000;  // only ever a failure detector

// One client: maps `len` bytes, connects, reads `order`, checks it.
// Returns the milliseconds from Connect until the working set was read.
Result<double> ClientWorkingSet(const std::string& sock, size_t len,
                                const std::vector<size_t>& order, const char* expect,
                                bool wait_ready) {
  PW_ASSIGN_OR_RETURN(BenchMem mem, BenchMem::Map(len));
  LazyClientOptions lo;
  lo.wait_ready = wait_ready ? std::chrono::milliseconds(kReadyWaitMs) : Duration::zero();
  const uint64_t t0 = NowNs();
  PW_ASSIGN_OR_RETURN(
      std::unique_ptr<LazyClient> client,
      LazyClient::Connect(sock, {{reinterpret_cast<uint64_t>(mem.p), len, 0, PageSize()}}, lo));
  Touch(mem.p, order);
  const double ms = Ms(NowNs() - t0);
  const size_t wrong = CountWrongPages(mem.p, expect, order);
  if (wrong > 0) {
    return Status::Corruption(std::to_string(wrong) +
                              " page(s) of the working set served with wrong content");
  }
  client.reset();  // makes the rest resident first (serve.h), then disconnects
  return ms;
}

// The median of `reps` runs against fresh in-process servers.
Result<double> ServedWorkingSetMs(const std::string& sock,
                                  const std::shared_ptr<PageSource>& source, size_t len,
                                  const std::vector<size_t>& order, const char* expect,
                                  const std::vector<uint64_t>& prefetch, int reps) {
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    ServeOptions so;
    so.fill.prefetch = prefetch;
    PW_ASSIGN_OR_RETURN(std::unique_ptr<PageServer> server, PageServer::Start(sock, source, so));
    Result<double> t = ClientWorkingSet(sock, len, order, expect, /*wait_ready=*/true);
    server->Stop();
    PW_RETURN_IF_ERROR(t.status());
    ms.push_back(*t);
  }
  return Median(ms);
}

struct ClientsRun {
  double p50_ms = 0, max_ms = 0;
  double rss_mib = 0;
};

// `n` clients of a fresh `pagewise serve` process at once.
Result<ClientsRun> RunClients(const std::string& exe, const std::string& image,
                              const std::string& sock, size_t len, const char* expect,
                              const std::vector<size_t>& order, int n) {
  PW_ASSIGN_OR_RETURN(
      std::unique_ptr<sys::ChildProcess> server,
      sys::ChildProcess::Spawn(exe, {"serve", "--socket", sock, "--image", image, "--quiet"}));
  PW_RETURN_IF_ERROR(server->WaitForLine("listening on", kReadyWaitMs));
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  std::vector<double> ms(static_cast<size_t>(n), 0);
  std::vector<Status> st(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      {
        // Every client connects at the same moment.
        std::unique_lock<std::mutex> lk(mu);
        if (++arrived == n) cv.notify_all();
        cv.wait(lk, [&] { return arrived == n; });
      }
      Result<double> t = ClientWorkingSet(sock, len, order, expect, /*wait_ready=*/false);
      st[static_cast<size_t>(i)] = t.status();
      if (t.ok()) ms[static_cast<size_t>(i)] = *t;
    });
  }
  for (auto& t : threads) t.join();
  for (const Status& s : st) PW_RETURN_IF_ERROR(s);
  ClientsRun out;
  PW_ASSIGN_OR_RETURN(uint64_t rss, server->PeakRssBytes());
  out.rss_mib = static_cast<double>(rss) / (1 << 20);
  PW_RETURN_IF_ERROR(server->Signal(SIGTERM));
  PW_ASSIGN_OR_RETURN(int code, server->Wait());
  if (code != 0) {
    return Status::Internal("pagewise serve exited with status " + std::to_string(code));
  }
  out.p50_ms = Median(ms);
  out.max_ms = *std::max_element(ms.begin(), ms.end());
  return out;
}

}  // namespace

Status RunServePrefetchRows(const BenchOptions& opts, const std::string& dir,
                            const std::shared_ptr<PageSource>& source, const char* content,
                            size_t len, const std::vector<size_t>& order,
                            const std::vector<uint64_t>& trace, BenchReport* report) {
  Progress(opts, "restore: serve, working set with and without prefetch");
  const std::string sock = dir + "/prefetch.sock";
  PW_ASSIGN_OR_RETURN(double none, ServedWorkingSetMs(sock, source, len, order, content, {}, 3));
  PW_ASSIGN_OR_RETURN(double pre, ServedWorkingSetMs(sock, source, len, order, content, trace, 3));
  report->Add({"prefetch", "connect_to_working_set_ms", pre, "ms", "no_prefetch", none});
  return Status::Ok();
}

Status RunClientsRows(const BenchOptions& opts, const std::string& dir, BenchReport* report) {
  // 64 MiB per client (x scale): 32 clients fill 2 GiB in all.
  const size_t page = PageSize();
  const size_t len = std::max<size_t>(
      256 * page, static_cast<size_t>(static_cast<double>(64 << 20) * opts.scale) / page * page);
  PW_ASSIGN_OR_RETURN(BenchMem content, BenchMem::Map(len));
  MakeContent(content.p, len, 4321);
  const std::string image = dir + "/clients.pwimg";
  PW_RETURN_IF_ERROR(WriteImage(image, content.p, len));
  PW_ASSIGN_OR_RETURN(std::string exe, sys::SelfExePath());
  const std::vector<size_t> order = Pattern("ws", len / page, 77);
  // The single client three times (its median), 32 clients once (the
  // median over them).
  ClientsRun one;
  std::vector<double> one_ms, one_max, one_rss;
  for (int rep = 0; rep < 3; ++rep) {
    Progress(opts, "restore: serve, one client (" + std::to_string(rep + 1) + "/3)");
    PW_ASSIGN_OR_RETURN(ClientsRun r,
                        RunClients(exe, image, dir + "/c1.sock", len, content.p, order, 1));
    one_ms.push_back(r.p50_ms);
    one_max.push_back(r.max_ms);
    one_rss.push_back(r.rss_mib);
  }
  one.p50_ms = Median(one_ms);
  one.max_ms = Median(one_max);
  one.rss_mib = Median(one_rss);
  Progress(opts, "restore: serve, 32 clients at once");
  PW_ASSIGN_OR_RETURN(ClientsRun many,
                      RunClients(exe, image, dir + "/c32.sock", len, content.p, order, 32));
  report->Add({"clients32", "working_set_ms_p50", many.p50_ms, "ms", "single_client", one.p50_ms});
  report->Add({"clients32", "working_set_ms_max", many.max_ms, "ms", "single_client", one.max_ms});
  report->Add({"clients32", "server_rss_mib", many.rss_mib, "MiB", "single_client", one.rss_mib});
  return Status::Ok();
}

}  // namespace pagewise::bench
