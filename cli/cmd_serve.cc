// `pagewise serve --socket PATH (--image IMAGE | --mem-file RAW)`: a page
// fault server speaking Firecracker's UFFD handshake. (`pagewise serve
// --tcp ADDR:PORT (--image IMAGE | --criu-dir DIR)` is the CRIU TCP page
// server instead, src/criu: RunServeTcp below only hands over to it.) Serves a flat memory
// file as is, and an image as if it were that flat file, to any number of
// clients at once, until SIGINT/SIGTERM (or --clients N have come and
// gone). Prints "pagewise serve: listening on PATH" on stdout once ready,
// one structured line per client event on stderr (serve_report.h), and a
// summary at the end (JSON with --json).
//
// Trust (docs/security.md): the socket is created with --socket-mode
// (0600) and only peers allowed by --allow-uid/--allow-gid (default: our
// own uid) are served; only a stale socket at PATH is replaced; the limits
// bound what one client, and all of them, can make the server hold.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.h"
#include "pagewise/criu.h"
#include "pagewise/image.h"
#include "pagewise/output_file.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "pagewise/serve_handover.h"
#include "pagewise/serve_metrics.h"
#include "pagewise/signals.h"
#include "serve_report.h"

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
  std::string tcp;         // --tcp: the CRIU TCP page server (pagewise/criu.h)
  std::string criu_dir;
  int status_fd = -1;
  const CLI::Option* max_clients_opt = nullptr;
  std::string socket_mode = "0600";
  std::vector<uint32_t> allow_uids;
  std::vector<uint32_t> allow_gids;
  bool no_background = false;
  bool no_ready = false;
  bool json = false;
  bool quiet = false;
  size_t window = 16;
  size_t batch = 64;
  size_t clients = 0;
  int handshake_timeout_ms = 10000;
  ServeLimits limits;
};

Result<mode_t> ParseMode(const std::string& s) {
  mode_t m = 0;
  if (s.empty() || s.size() > 4) return Status::InvalidArgument("--socket-mode must be octal");
  for (char c : s) {
    if (c < '0' || c > '7') return Status::InvalidArgument("--socket-mode must be octal: " + s);
    m = m * 8 + static_cast<mode_t>(c - '0');
  }
  if (m > 0777) return Status::InvalidArgument("--socket-mode " + s + " is beyond 0777");
  return m;
}

// The files the server reads: --record must not replace one of them.
Result<std::vector<std::string>> InputFiles(const ServeArgs& a) {
  std::vector<std::string> in;
  if (!a.mem_file.empty()) in.push_back(a.mem_file);
  if (!a.image.empty()) {
    PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> img, Image::Open(a.image));
    for (const LayerInfo& l : img->layers()) in.push_back(l.path);
  }
  if (!a.prefetch.empty()) in.push_back(a.prefetch);
  return in;
}

Status Prepare(const ServeArgs& a, const PageSource& source, ServeOptions* o) {
  o->fill.fault_window_pages = a.window;
  o->fill.background_batch_pages = a.batch;
  o->fill.background_fill = !a.no_background;
  o->send_ready = !a.no_ready;
  o->fill.record_trace = !a.record.empty();
  o->handshake_timeout = std::chrono::milliseconds(a.handshake_timeout_ms);
  o->limits = a.limits;
  PW_ASSIGN_OR_RETURN(o->access.socket_mode, ParseMode(a.socket_mode));
  o->access.allow_uids.assign(a.allow_uids.begin(), a.allow_uids.end());
  o->access.allow_gids.assign(a.allow_gids.begin(), a.allow_gids.end());
  if (!a.record.empty()) {
    PW_ASSIGN_OR_RETURN(std::vector<std::string> inputs, InputFiles(a));
    PW_RETURN_IF_ERROR(CheckOutputPath(a.record, inputs).WithContext("--record"));
  }
  if (!a.prefetch.empty()) {
    PW_ASSIGN_OR_RETURN(WorkingSetTrace t, ReadTrace(a.prefetch));
    if (t.source_size != source.size()) {
      std::fprintf(stderr,
                   "pagewise serve: warning: trace %s was recorded from a source of %llu "
                   "bytes, this one has %llu\n",
                   a.prefetch.c_str(), static_cast<unsigned long long>(t.source_size),
                   static_cast<unsigned long long>(source.size()));
    }
    for (const TraceEntry& e : t.entries) o->fill.prefetch.push_back(e.offset);
  }
  return ValidateServeOptions(*o);
}

// `serve --tcp`: the page server of src/criu (RunCriuTcpServer), which
// `pagewise criu lazy-pages --page-server` fetches from. The options that
// belong to the Unix-socket server are refused by the parser (excludes).
int RunServeTcp(const ServeArgs& a) {
  if (a.image.empty() == a.criu_dir.empty()) {
    return Fail("serve", Status::InvalidArgument("with --tcp give exactly one of --image and "
                                                 "--criu-dir"));
  }
  CriuTcpServerOptions o;
  if (a.max_clients_opt != nullptr && a.max_clients_opt->count() > 0) {
    o.max_clients = a.limits.max_clients;
  }
  std::function<void(const std::string&)> log;
  if (!a.quiet) {
    log = [](const std::string& line) {
      std::fprintf(stderr, "pagewise serve --tcp: %s\n", line.c_str());
    };
  }
  const Status st = RunCriuTcpServer(a.tcp, a.criu_dir, a.image, o, a.status_fd, log);
  return st.ok() ? 0 : Fail("serve --tcp", st);
}

// Longer than our ~80 lines: the mapping from each serve option to the
// server's options and their refusals, in the order of pagewise-serve(1).
int RunServe(const ServeArgs& a) {
  // A client or log reader that goes away must not kill the server.
  IgnoreSigpipe();
  if (!a.tcp.empty()) return RunServeTcp(a);
  if (a.socket.empty()) {
    return Fail("serve", Status::InvalidArgument("give --socket PATH (or --tcp ADDR:PORT)"));
  }
  if (a.image.empty() == a.mem_file.empty()) {
    return Fail("serve", Status::InvalidArgument("give exactly one of --image and --mem-file"));
  }
  // pread, not mmap: the server never touches the file's bytes through a
  // mapping, so a file that shrinks under it cannot raise SIGBUS in it;
  // the affected pages fail to read and their clients get SIGBUS instead.
  Result<std::shared_ptr<PageSource>> source =
      a.image.empty() ? OpenMemFileSource(a.mem_file, MemFileAccess::kPread)
                      : OpenImageSource(a.image);
  if (!source.ok()) return Fail("serve", source.status());
  ServeOptions o;
  Status prepared = Prepare(a, **source, &o);
  if (!prepared.ok()) return Fail("serve", prepared);

  // Signals are taken synchronously by this thread: block them before any
  // server thread exists (threads inherit the mask).
  const StopSignals stop = StopSignals::Block();
  std::atomic<size_t> done{0};
  ServeReporter reporter(a.quiet);
  const size_t want = a.clients;
  o.on_client = [&](const ClientReport& c) {
    reporter.OnClient(c);
    if (!c.active && ++done == want) RequestStop();  // wakes the main thread
  };
  o.on_event = [&](const ServeEvent& e) { reporter.OnEvent(e); };
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
        RequestStop();  // wakes the main thread
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

  stop.Wait();
  metrics.reset();
  offer->reset();
  (*server)->Stop();
  const std::vector<ClientReport> clients = (*server)->clients();
  int rc = 0;
  if (!a.record.empty() && !handed_over) {
    Status s = WriteTrace(a.record, (*server)->trace());
    if (!s.ok()) rc = Fail("serve", s);
  }
  if (a.json) std::cout << reporter.Summary(clients, **server).dump(2) << std::endl;
  return rc;
}

void AddLimitOptions(CLI::App* app, ServeArgs* a) {
  ServeLimits& l = a->limits;
  app->add_option("--max-regions", l.max_regions, "Regions per handshake (default 64)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app->add_option("--max-client-bytes", l.max_client_bytes,
                  "Bytes one client may register (default 256 GiB; K/M/G/T suffixes)")
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 62));
  app->add_option("--max-total-bytes", l.max_total_bytes,
                  "Bytes all clients may register together (default 1 TiB)")
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 62));
  app->add_option("--max-pending", l.max_pending, "Handshakes in progress at once (default 64)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app->add_option("--max-clients", l.max_clients, "Clients served at once (default 128)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app->add_option("--max-spaces", l.max_spaces,
                  "Address spaces per client, itself plus forked children (default 16)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app->add_option("--max-finished", l.max_finished_records,
                  "Finished clients kept for the summary (default 256)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24));
}

// --tcp and what goes with it. Every other option but --image, --quiet
// and --max-clients belongs to the Unix-socket server and is refused beside
// --tcp (a usage error, exit 2), never silently ignored.
void AddTcpOptions(CLI::App* app, ServeArgs* a, std::vector<CLI::Option*> unix_only) {
  for (const char* name :
       {"--prefetch", "--record", "--metrics", "--take-over", "--socket-mode", "--allow-uid",
        "--allow-gid", "--no-ready-byte", "--json", "--window", "--batch", "--no-background",
        "--handshake-timeout-ms", "--max-regions", "--max-client-bytes", "--max-total-bytes",
        "--max-pending", "--max-spaces", "--max-finished"}) {
    unix_only.push_back(app->get_option(name));
  }
  CLI::Option* tcp = app->add_option(
      "--tcp", a->tcp,
      "Instead of --socket: serve pages over TCP on ADDR:PORT to `pagewise criu lazy-pages "
      "--page-server` (with --image or --criu-dir)");
  for (CLI::Option* o : unix_only) tcp->excludes(o);
  app->add_option("--criu-dir", a->criu_dir, "With --tcp: serve this CRIU dump directory")
      ->needs(tcp);
  app->add_option("--status-fd", a->status_fd, "With --tcp: write \\0 to FD once listening")
      ->needs(tcp)
      ->check(CLI::Range(0, 1 << 20));
  a->max_clients_opt = app->get_option("--max-clients");
}

CommandRegistration reg(
    "serve", "Serve guest memory to Firecracker-style UFFD clients", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<ServeArgs>();
      CLI::Option* sock = app->add_option("--socket", a->socket, "Unix socket to listen on");
      app->add_option("--image", a->image, "Serve this image's flat view");
      CLI::Option* mem = app->add_option("--mem-file", a->mem_file, "Serve this flat memory file");
      app->add_flag("--no-background", a->no_background, "Install pages only when they fault");
      app->add_flag("--no-ready-byte", a->no_ready,
                    "Do not write the ready byte ('R', once the prefetch list is in) to clients");
      app->add_option("--window", a->window, "Pages filled around a fault (1..512)")
          ->check(CLI::Range(size_t{1}, size_t{512}));
      app->add_option("--batch", a->batch, "Pages per background fill (1..4096)")
          ->check(CLI::Range(size_t{1}, size_t{4096}));
      app->add_option("--prefetch", a->prefetch, "Working-set trace to install first");
      app->add_option("--record", a->record, "Write the first client's demand-fault trace here");
      app->add_option("--clients", a->clients, "Exit after this many clients are done (0: never)")
          ->check(CLI::Range(size_t{0}, size_t{1} << 30));
      app->add_option("--socket-mode", a->socket_mode, "Octal mode of the socket file (0600)");
      app->add_option("--allow-uid", a->allow_uids,
                      "A uid allowed to connect (repeatable; default: the server's own)");
      app->add_option("--allow-gid", a->allow_gids, "A gid whose members may connect (repeatable)");
      app->add_option("--handshake-timeout-ms", a->handshake_timeout_ms,
                      "A client must send its handshake within this (default 10000)")
          ->check(CLI::Range(1, 3600 * 1000));
      AddLimitOptions(app, a.get());
      app->add_option("--metrics", a->metrics,
                      "Serve Prometheus metrics over HTTP on this loopback address "
                      "(127.0.0.1:PORT; port 0: any)");
      app->add_flag("--take-over", a->take_over,
                    "Take over the clients of the server running on --socket (upgrade, restart)");
      app->add_flag("--json", a->json, "Print a JSON summary at exit");
      app->add_flag("--quiet", a->quiet, "No per-client lines on stderr");
      AddTcpOptions(app, a.get(), {sock, mem});
      return [a]() -> int { return RunServe(*a); };
    });

}  // namespace
}  // namespace pagewise::cli
