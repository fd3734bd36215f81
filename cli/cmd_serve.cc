// `pagewise serve --socket PATH (--image IMAGE | --mem-file RAW)`: a page
// fault server speaking Firecracker's UFFD handshake. Serves a flat memory
// file as is, and an image as if it were that flat file, to any number of
// clients at once, until SIGINT/SIGTERM (or --clients N have come and
// gone). Prints "pagewise serve: listening on PATH" on stdout once ready,
// one line per client event on stderr, and a summary at the end (JSON with
// --json).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "pagewise/serve_handover.h"
#include "pagewise/serve_metrics.h"

namespace pagewise::cli {
namespace {

struct ServeArgs {
  std::string socket;
  std::string image;
  std::string mem_file;
  std::string prefetch;
  std::string record;
  std::string metrics;     // serve_metrics.h
  bool take_over = false;  // serve_handover.h
  bool no_background = false;
  bool no_ready = false;
  bool json = false;
  bool quiet = false;
  size_t window = 16;
  size_t batch = 64;
  size_t clients = 0;
};

nlohmann::json StatsJson(const ClientReport& c) {
  const RestoreStats& s = c.stats;
  return {{"id", c.id},
          {"pid", c.pid},
          {"status", c.status.ok() ? "ok" : c.status.ToString()},
          {"demand_faults", s.demand_faults},
          {"pages_demand", s.pages_demand},
          {"pages_background", s.pages_background},
          {"pages_prefetch", s.pages_prefetch},
          {"prefetch_late_faults", s.prefetch_late_faults},
          {"prefetch_hit_faults", s.prefetch_hit_faults},
          {"prefetch_waste_entries", s.prefetch_waste_entries},
          {"pages_readahead", s.pages_readahead},
          {"zero_pages", s.zero_pages},
          {"bytes_copied", s.bytes_copied},
          {"removes", s.removes},
          {"forks", s.forks},
          {"first_fault_seconds", NsToSeconds(s.first_fault_ns)},
          {"resident_seconds", NsToSeconds(s.resident_ns)},
          {"fault_latency_p50_us", static_cast<double>(s.fault_latency_p50_ns) / 1e3},
          {"fault_latency_p99_us", static_cast<double>(s.fault_latency_p99_ns) / 1e3}};
}

void PrintClient(const ClientReport& c) {
  const RestoreStats& s = c.stats;
  if (c.active) {
    uint64_t bytes = 0;
    for (const Region& r : c.regions) bytes += r.length;
    std::fprintf(stderr,
                 "pagewise serve: client %llu (pid %d) connected: %zu region(s), %.1f MiB\n",
                 static_cast<unsigned long long>(c.id), static_cast<int>(c.pid), c.regions.size(),
                 static_cast<double>(bytes) / (1 << 20));
    return;
  }
  std::fprintf(
      stderr,
      "pagewise serve: client %llu (pid %d) done: %s; %llu demand faults, %llu pages on "
      "demand, %llu in background (%llu prefetched), %llu zero; resident %s; fault "
      "latency p50 %.1f us p99 %.1f us\n",
      static_cast<unsigned long long>(c.id), static_cast<int>(c.pid),
      c.status.ok() ? "ok" : c.status.ToString().c_str(),
      static_cast<unsigned long long>(s.demand_faults),
      static_cast<unsigned long long>(s.pages_demand),
      static_cast<unsigned long long>(s.pages_background),
      static_cast<unsigned long long>(s.pages_prefetch),
      static_cast<unsigned long long>(s.zero_pages),
      s.resident_ns < 0 ? "never" : (std::to_string(NsToSeconds(s.resident_ns)) + " s").c_str(),
      static_cast<double>(s.fault_latency_p50_ns) / 1e3,
      static_cast<double>(s.fault_latency_p99_ns) / 1e3);
}

int RunServe(const ServeArgs& a) {
  if (a.image.empty() == a.mem_file.empty()) {
    return Fail("serve", Status::InvalidArgument("give exactly one of --image and --mem-file"));
  }
  Result<std::shared_ptr<PageSource>> source =
      a.image.empty() ? OpenMemFileSource(a.mem_file) : OpenImageSource(a.image);
  if (!source.ok()) return Fail("serve", source.status());

  ServeOptions o;
  o.fill.fault_window_pages = a.window;
  o.fill.background_batch_pages = a.batch;
  o.fill.background_fill = !a.no_background;
  o.send_ready = !a.no_ready;
  o.fill.record_trace = !a.record.empty();
  if (!a.prefetch.empty()) {
    Result<WorkingSetTrace> t = ReadTrace(a.prefetch);
    if (!t.ok()) return Fail("serve", t.status());
    if (t->source_size != (*source)->size()) {
      std::fprintf(stderr,
                   "pagewise serve: warning: trace %s was recorded from a source of %llu "
                   "bytes, this one has %llu\n",
                   a.prefetch.c_str(), static_cast<unsigned long long>(t->source_size),
                   static_cast<unsigned long long>((*source)->size()));
    }
    for (const TraceEntry& e : t->entries) o.fill.prefetch.push_back(e.offset);
  }

  // Signals are taken synchronously by this thread: block them before any
  // server thread exists (threads inherit the mask).
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  std::atomic<size_t> done{0};
  std::mutex print_mu;
  const size_t want = a.clients;
  const bool quiet = a.quiet;
  o.on_client = [&](const ClientReport& c) {
    if (!quiet) {
      std::lock_guard<std::mutex> lk(print_mu);
      PrintClient(c);
    }
    if (!c.active && ++done == want) kill(getpid(), SIGTERM);  // wake the main thread
  };
  HandoverReport took;
  Result<std::unique_ptr<PageServer>> server = a.take_over
                                                   ? TakeOverPageServer(a.socket, *source, o, &took)
                                                   : PageServer::Start(a.socket, *source, o);
  if (!server.ok()) return Fail("serve", server.status());
  if (a.take_over) {
    std::printf(
        "pagewise serve: took over %zu client(s) (%zu address space(s)) from pid %d; "
        "longest stall %.3f ms\n",
        took.clients, took.spaces, static_cast<int>(took.peer), took.stall_ms);
  }
  std::printf("pagewise serve: listening on %s (%s)\n", a.socket.c_str(),
              (*source)->Describe().c_str());
  // A successor may take over (`serve --take-over`): then stop and exit.
  std::atomic<bool> handed_over{false};
  Result<std::unique_ptr<HandoverOffer>> offer =
      HandoverOffer::Start(server->get(), *source, [&](const HandoverReport& r) {
        std::printf("pagewise serve: handed over %zu client(s) to pid %d; stall %.3f ms\n",
                    r.clients, static_cast<int>(r.peer), r.stall_ms);
        std::fflush(stdout);
        handed_over = true;
        kill(getpid(), SIGTERM);  // wake the main thread
      });
  if (!offer.ok()) return Fail("serve: offering handover", offer.status());
  std::unique_ptr<MetricsEndpoint> metrics;
  if (!a.metrics.empty()) {
    ServeMetricsExtra extra;
    if (a.take_over) {
      extra.handovers_in = took.clients;
      extra.handover_max_stall_ms = took.stall_ms;
    }
    Result<std::unique_ptr<MetricsEndpoint>> m = StartServeMetrics(server->get(), a.metrics, extra);
    if (!m.ok()) return Fail("serve --metrics", m.status());
    metrics = std::move(*m);
    std::printf("pagewise serve: metrics on http://%s/metrics\n", metrics->address().c_str());
  }
  std::fflush(stdout);

  int sig = 0;
  sigwait(&sigs, &sig);
  metrics.reset();
  offer->reset();
  (*server)->Stop();
  const std::vector<ClientReport> clients = (*server)->clients();
  if (!a.record.empty() && !handed_over) {
    Status s = WriteTrace(a.record, (*server)->trace());
    if (!s.ok()) return Fail("serve", s);
  }
  if (a.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const ClientReport& c : clients) out.push_back(StatsJson(c));
    std::cout << nlohmann::json{{"clients", out}, {"refused", (*server)->refused()}}.dump(2)
              << std::endl;
  }
  return 0;
}

CommandRegistration reg(
    "serve", "Serve guest memory to Firecracker-style UFFD clients", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<ServeArgs>();
      app->add_option("--socket", a->socket, "Unix socket to listen on")->required();
      app->add_option("--image", a->image, "Serve this image's flat view");
      app->add_option("--mem-file", a->mem_file, "Serve this flat memory file");
      app->add_flag("--no-background", a->no_background, "Install pages only when they fault");
      app->add_flag("--no-ready-byte", a->no_ready,
                    "Do not write the ready byte ('R', once the prefetch list is in) to clients");
      app->add_option("--window", a->window, "Pages filled around a fault (1..512)");
      app->add_option("--batch", a->batch, "Pages per background fill (1..4096)");
      app->add_option("--prefetch", a->prefetch, "Working-set trace to install first");
      app->add_option("--record", a->record, "Write the first client's demand-fault trace here");
      app->add_option("--clients", a->clients, "Exit after this many clients are done (0: never)");
      app->add_option("--metrics", a->metrics,
                      "Serve Prometheus metrics over HTTP on this loopback address "
                      "(127.0.0.1:PORT; port 0: any)");
      app->add_flag("--take-over", a->take_over,
                    "Take over the clients of the server running on --socket (upgrade, restart)");
      app->add_flag("--json", a->json, "Print a JSON summary at exit");
      app->add_flag("--quiet", a->quiet, "No per-client lines on stderr");
      return [a]() -> int { return RunServe(*a); };
    });

}  // namespace
}  // namespace pagewise::cli
