// `pagewise bench NAME [--json FILE]`: runs a benchmark registered in bench/.
#include <cstdio>
#include <memory>

#include "bench.h"
#include "command.h"

namespace pagewise::cli {
namespace {

CommandRegistration reg("bench", "Run a benchmark (each figure beside a same-run baseline)",
                        [](CLI::App* app) -> RunFn {
                          app->require_subcommand(1);
                          auto opts = std::make_shared<bench::BenchOptions>();
                          auto chosen = std::make_shared<const bench::Bench*>(nullptr);
                          for (const bench::Bench& b : bench::Benches()) {
                            CLI::App* sub = app->add_subcommand(b.name, b.help);
                            sub->add_option("--json", opts->json_path,
                                            "Also write the rows as JSON to FILE ('-': stdout)");
                            sub->add_option("--scale", opts->scale,
                                            "Scale the default sizes (e.g. 0.25 for a quick run)")
                                ->check(CLI::Range(0.001, 16.0));
                            sub->add_flag("--quiet", opts->quiet, "No progress output");
                            sub->add_option("--svg", opts->svg_dir,
                                            "Also plot results as SVG files into DIR");
                            if (b.name == "remote") {
                              sub->add_option("--endpoint", opts->endpoint,
                                              "S3 endpoint to use (default: start a local "
                                              "RADOS Gateway)");
                            }
                            if (b.name == "criu") {
                              sub->add_option("--subjects", opts->subjects,
                                              "Restore with these subjects only (criu_restore, "
                                              "criu_lazy_pages, pagewise, pagewise_tcp)")
                                  ->delimiter(',')
                                  ->check(CLI::IsMember({"criu_restore", "criu_lazy_pages",
                                                         "pagewise", "pagewise_tcp"}));
                            }
                            sub->callback([chosen, &b] { *chosen = &b; });
                          }
                          return [opts, chosen]() -> int {
                            const bench::Bench* b = *chosen;
                            bench::BenchReport report;
                            Status s = b->run(*opts, &report);
                            if (!s.ok()) return Fail("bench " + b->name, s);
                            report.Print();
                            if (!opts->json_path.empty()) {
                              Status js = report.WriteJson(opts->json_path);
                              if (!js.ok()) return Fail("bench " + b->name, js);
                            }
                            return 0;
                          };
                        });

}  // namespace
}  // namespace pagewise::cli
