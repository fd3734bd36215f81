// `pagewise explore`: every interleaving of the races pagewise handles,
// forced through the real kernel and pagewise's real code.
//
//   pagewise explore [--race NAME|all] [--variant NAME] [--json] [--list]
//
// Runs pagewise/explore.h. Output: one line per race (schedules explored,
// whether that was every schedule, violations), and for a race with
// violations its first violating schedule; with --json, one JSON object per
// race, one per line, with "race", "variant", "schedules", "exhaustive",
// "bound", "max_steps", "violations", "elapsed_seconds", and for a race
// with violations "first_violation" (what broke) and
// "first_violation_schedule" (its steps); "error" if the explorer failed.
// --list prints the races and variants instead.
// Exit status: 0 when the real code (no --variant) broke no invariant, or
// when a --variant was caught on every race it is explored on; 1 otherwise
// (or when the explorer failed); 2 for bad arguments; 3 when the kernel
// lacks a feature the explorer needs.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "pagewise/explore.h"

namespace pagewise::cli {
namespace {

struct Args {
  std::string race = "all";
  std::string variant;
  bool json = false;
  bool list = false;
  bool verbose = false;
};

int List() {
  std::printf("races:\n");
  for (const ExploreRaceInfo& r : ExploreRaces()) {
    std::printf("  %-28s %s\n", r.name.c_str(), r.summary.c_str());
  }
  std::printf("variants (negative controls):\n");
  for (const ExploreVariantInfo& v : ExploreVariants()) {
    std::string races;
    for (const std::string& r : v.races) races += (races.empty() ? "" : ", ") + r;
    std::printf("  %-28s %s\n  %-28s on: %s\n", v.name.c_str(), v.summary.c_str(), "",
                races.c_str());
  }
  return 0;
}

nlohmann::json ResultJson(const ExploreResult& r) {
  nlohmann::json j = {{"race", r.race},
                      {"variant", r.variant},
                      {"schedules", r.schedules},
                      {"exhaustive", r.exhaustive},
                      {"bound", r.bound},
                      {"max_steps", r.max_steps},
                      {"violations", r.violations},
                      {"elapsed_seconds", r.elapsed_seconds}};
  if (r.violations > 0) {
    j["first_violation"] = r.first_violation;
    j["first_violation_schedule"] = r.first_violation_schedule;
  }
  if (!r.error.empty()) j["error"] = r.error;
  return j;
}

void PrintResult(const ExploreResult& r) {
  std::printf("%-28s %6llu schedules  %-24s %4llu violations  %.1f s%s\n", r.race.c_str(),
              static_cast<unsigned long long>(r.schedules),
              r.exhaustive ? "(all)" : ("(" + r.bound + ")").c_str(),
              static_cast<unsigned long long>(r.violations), r.elapsed_seconds,
              r.error.empty() ? "" : "  EXPLORER ERROR");
  if (!r.error.empty()) std::printf("    %s\n", r.error.c_str());
  if (r.violations > 0) {
    std::printf("  first violating schedule:\n");
    for (const std::string& l : r.first_violation_schedule) std::printf("    %s\n", l.c_str());
    for (const std::string& l : r.first_violation) std::printf("  VIOLATION: %s\n", l.c_str());
  }
  std::fflush(stdout);
}

int Run(const Args& a) {
  if (a.list) return List();
  ExploreOptions o;
  o.race = a.race;
  o.variant = a.variant;
  o.verbose = a.verbose;
  if (a.verbose) {
    o.progress = [](const ExploreProgress& p) {
      std::fprintf(stderr, "%s schedule %llu:\n", p.race.c_str(),
                   static_cast<unsigned long long>(p.schedules));
      for (const std::string& l : p.schedule) std::fprintf(stderr, "  %s\n", l.c_str());
      for (const std::string& l : p.broke) std::fprintf(stderr, "  VIOLATION: %s\n", l.c_str());
    };
  } else if (StderrIsTerminal()) {
    o.progress = [](const ExploreProgress& p) {
      std::fprintf(stderr, "\r\033[K%s  %llu schedules  %llu violations", p.race.c_str(),
                   static_cast<unsigned long long>(p.schedules),
                   static_cast<unsigned long long>(p.violations));
    };
  }
  Result<std::vector<ExploreResult>> results = RunExplore(o);
  if (o.progress && !a.verbose) std::fprintf(stderr, "\r\033[K");
  if (!results.ok()) return Fail("explore", results.status());
  bool ok = true;
  for (const ExploreResult& r : *results) {
    if (!r.error.empty()) ok = false;
    if (a.variant.empty() ? r.violations > 0 : r.violations == 0) ok = false;
    if (a.json) {
      std::cout << ResultJson(r).dump() << std::endl;
    } else {
      PrintResult(r);
    }
  }
  if (!a.json) {
    std::printf("%s\n", !ok                 ? "FAILED: see the rows above"
                        : a.variant.empty() ? "every schedule of every race kept its invariants"
                                            : "the variant was caught on every race");
  }
  return ok ? 0 : 1;
}

CommandRegistration reg(
    "explore", "Force every interleaving of the kernel races pagewise handles",
    [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<Args>();
      app->add_option("--race", a->race, "A race name, or all (see --list)")->capture_default_str();
      app->add_option("--variant", a->variant,
                      "A negative control: a deliberately broken code path that must be caught");
      app->add_flag("--json", a->json, "One JSON object per race, one per line");
      app->add_flag("--list", a->list, "List the races and variants");
      app->add_flag("--verbose", a->verbose, "Print every schedule's steps to stderr");
      return [a]() -> int { return Run(*a); };
    });

}  // namespace
}  // namespace pagewise::cli
