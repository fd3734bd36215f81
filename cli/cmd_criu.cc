// `pagewise criu lazy-pages -D DIR [-W DIR] [--image IMAGE]
// [--page-server HOST:PORT] [--trace FILE] [--status-fd FD] [--json] ...`:
// a drop-in for `criu lazy-pages`: run it, then `criu restore
// --lazy-pages -D DIR` beside it. It serves every restored task's memory
// with the pagewise engine and exits once the restore has ended and every
// task's memory is resident (0), or says what failed (1; 2 bad arguments).
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "command.h"
#include "criu_cli.h"
#include "image_util.h"
#include "pagewise/criu.h"

namespace pagewise::cli {
namespace {

struct LazyArgs {
  CriuLazyPagesOptions o;
  bool json = false;
  bool quiet = false;
  bool no_background = false;
  std::string on_loss = "sigbus";
};

nlohmann::json ReportJson(const CriuLazyPagesReport& r) {
  nlohmann::json tasks = nlohmann::json::array();
  for (const CriuTaskReport& t : r.tasks) {
    tasks.push_back({{"pid", t.pid},
                     {"ok", t.status.ok()},
                     {"error", t.status.ok() ? "" : t.status.ToString()},
                     {"killed", t.killed},
                     {"lazy_pages", t.lazy_pages},
                     {"pages_demand", t.stats.pages_demand},
                     {"pages_background", t.stats.pages_background},
                     {"pages_prefetch", t.stats.pages_prefetch},
                     {"demand_faults", t.stats.demand_faults},
                     {"other_faults", t.stats.other_faults},
                     {"zero_pages", t.stats.zero_pages},
                     {"eexist_pages", t.stats.eexist_pages},
                     {"eagain_retries", t.stats.eagain_retries},
                     {"poisoned_pages", t.stats.poisoned_pages},
                     {"forks", t.stats.forks},
                     {"remaps", t.stats.remaps},
                     {"removes", t.stats.removes},
                     {"unmaps", t.stats.unmaps},
                     {"spaces_total", t.stats.spaces_total},
                     {"resident_seconds", t.stats.resident_ns / 1e9},
                     {"fault_latency_p50_us", t.stats.fault_latency_p50_ns / 1e3},
                     {"fault_latency_p99_us", t.stats.fault_latency_p99_ns / 1e3}});
  }
  return {{"source", r.source},
          {"restore_finished", r.restore_finished},
          {"zombies", r.zombies},
          {"seconds", r.seconds},
          {"tasks", tasks}};
}

RunFn SetupLazyPages(CLI::App* app) {
  auto a = std::make_shared<LazyArgs>();
  app->add_option("-D,--images-dir", a->o.dump_dir, "CRIU dump directory")->required();
  app->add_option("-W,--work-dir", a->o.work_dir,
                  "Where criu restore looks for the socket (default: -D)");
  app->add_option("--image", a->o.image, "Pages from this image (pagewise import --criu)");
  app->add_option("--page-server", a->o.page_server,
                  "Pages from `pagewise serve --tcp` at HOST:PORT");
  app->add_option("--trace", a->o.trace_path,
                  "Working-set file: prefetched if present, recorded after");
  app->add_option("--status-fd", a->o.status_fd, "Write \\0 to FD once listening (as criu)");
  app->add_option("--fault-window", a->o.fault_window_pages,
                  "Pages filled around a fault (default 16)");
  app->add_option("--batch", a->o.background_batch_pages,
                  "Pages per background fill (default 256)");
  app->add_flag("--no-background", a->no_background, "Install pages only on fault");
  app->add_option("--on-loss", a->on_loss, "Pages that cannot be read: sigbus (default) or kill");
  app->add_option("--network-timeout-ms", a->o.network_timeout_ms,
                  "Page server timeout (default 5000)");
  app->add_flag("--json", a->json, "Print the report as JSON on stdout");
  app->add_flag("-q,--quiet", a->quiet, "No progress lines on stderr");
  return [a]() -> int {
    if (a->on_loss == "kill") {
      a->o.on_loss = CriuLossPolicy::kKill;
    } else if (a->on_loss != "sigbus") {
      return Fail("criu lazy-pages", Status::InvalidArgument("--on-loss must be sigbus or kill"));
    }
    a->o.background_fill = !a->no_background;
    if (!a->quiet) {
      a->o.log = [](const std::string& line) {
        std::fprintf(stderr, "pagewise criu lazy-pages: %s\n", line.c_str());
      };
    }
    Result<CriuLazyPagesReport> r = RunCriuLazyPages(a->o);
    if (!r.ok()) return Fail("criu lazy-pages", r.status());
    if (a->json) std::cout << ReportJson(*r).dump(2) << std::endl;
    bool ok = true;
    for (const CriuTaskReport& t : r->tasks) {
      if (!t.status.ok()) {
        std::fprintf(stderr, "pagewise criu lazy-pages: task %d: %s\n", t.pid,
                     t.status.ToString().c_str());
        ok = false;
      }
    }
    return ok ? 0 : 1;
  };
}

struct ServerArgs {
  std::string listen, dir, image;
  int status_fd = -1;
  CriuTcpServerOptions o;
  bool quiet = false;
};

RunFn SetupPageServer(CLI::App* app) {
  auto a = std::make_shared<ServerArgs>();
  app->add_option("--tcp", a->listen, "Listen on ADDR:PORT")->required();
  app->add_option("--criu-dir", a->dir, "Serve this CRIU dump directory");
  app->add_option("--image", a->image, "Serve this image (pagewise import --criu)");
  app->add_option("--status-fd", a->status_fd, "Write \\0 to FD once listening");
  app->add_option("--max-clients", a->o.max_clients, "Clients at once (default 16)");
  app->add_flag("-q,--quiet", a->quiet, "No log lines on stderr");
  return [a]() -> int {
    std::function<void(const std::string&)> log;
    if (!a->quiet) {
      log = [](const std::string& line) {
        std::fprintf(stderr, "pagewise serve --tcp: %s\n", line.c_str());
      };
    }
    Status st = RunCriuTcpServer(a->listen, a->dir, a->image, a->o, a->status_fd, log);
    if (!st.ok()) return Fail("serve --tcp", st);
    return 0;
  };
}

CommandRegistration reg("criu", "CRIU integration: lazy-pages daemon, TCP page server",
                        [](CLI::App* app) -> RunFn {
                          app->require_subcommand(1);
                          CLI::App* lazy_app = app->add_subcommand(
                              "lazy-pages", "Serve `criu restore --lazy-pages`");
                          RunFn lazy = SetupLazyPages(lazy_app);
                          CLI::App* srv_app = app->add_subcommand(
                              "page-server", "Serve a dump's pages over TCP (as serve --tcp)");
                          RunFn srv = SetupPageServer(srv_app);
                          return [=]() -> int {
                            if (lazy_app->parsed()) return lazy();
                            if (srv_app->parsed()) return srv();
                            return 2;
                          };
                        });

}  // namespace

int RunCriuImport(const std::string& dir, const std::string& image, const std::string& compress,
                  int level, bool json) {
  CriuImportOptions o;
  Result<Compression> c = ParseCompression(compress);
  if (!c.ok()) return Fail("import", c.status());
  o.write.compression = *c;
  o.write.level = level;
  Result<CriuImportReport> r = Status::Internal("not run");
  {
    ProgressLine progress("import --criu " + dir);
    o.progress = progress.Fn();
    r = ImportCriuDump(dir, image, o);
  }
  if (!r.ok()) return Fail("import", r.status());
  if (json) {
    std::cout << nlohmann::json{{"image", image},
                                {"criu_dir", dir},
                                {"tasks", r->tasks},
                                {"regions", r->regions},
                                {"pages", r->pages},
                                {"dump_pages_bytes", r->dump_pages_bytes},
                                {"image_bytes", r->image_bytes},
                                {"layers", r->layers},
                                {"verified", true}}
                     .dump(2)
              << std::endl;
  } else {
    std::printf(
        "%s: %llu tasks, %llu pages in %llu regions; dump pages %s -> image %s (%zu layer%s), "
        "verified\n",
        image.c_str(), static_cast<unsigned long long>(r->tasks),
        static_cast<unsigned long long>(r->pages), static_cast<unsigned long long>(r->regions),
        HumanBytes(r->dump_pages_bytes).c_str(), HumanBytes(r->image_bytes).c_str(),
        r->layers.size(), r->layers.size() > 1 ? "s" : "");
  }
  return 0;
}

}  // namespace pagewise::cli
