// `pagewise check`: proves on this kernel that tracking never loses a write.
//
//   pagewise check [--backend NAME|all] [--scenario NAME|all] [--threads N]
//                  [--seconds S] [--size BYTES] [--seed N] [--inject-loss] [--json]
//
// Runs the check engine (pagewise/check.h) once per backend x scenario.
// Output: a table (one row per run, lost pages described under failing rows);
// with --json, one JSON object when there is a single run, else a JSON array
// of those objects, in run order. Each object has "backend", "scenario",
// "rounds", "writes", "pages_compared", "lost_writes", "ok", plus
// "pages_reported", "scenario_ops", "region_bytes", "threads", "seconds",
// "elapsed_seconds", "lost_examples" and, for a run that failed with an
// error, "error". With --scenario all, a scenario the backend cannot track
// (hugetlb on uffd-wp/mprotect, kvm on mprotect) or that this machine lacks
// the setup for (no free huge pages, no /dev/kvm) is a row with "backend",
// "scenario" and "skipped" (the reason) instead; named, it fails (exit 3).
// Exit status: 0 when every run was ok; 1 when a write was lost or a run
// failed; 2 for bad arguments; 3 when the named backend is unavailable here
// (or a run needed a kernel feature that is missing, and nothing else failed).
// --backend all runs every available atomic backend (soft-dirty and
// two-step, which are documented to lose racing writes, only when named).
#include <cctype>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.h"
#include "pagewise/check.h"
#include "pagewise/probe.h"
#include "pagewise/tracker.h"

namespace pagewise::cli {
namespace {

struct Args {
  std::string backend = "auto";
  std::string scenario = "all";
  int threads = 8;
  double seconds = 2;
  std::string size = "256M";
  uint64_t seed = 0;
  bool inject_loss = false;
  bool json = false;
};

// "4096", "64K", "256M", "1G", "2T" (binary multiples; "MiB"/"MB" accepted).
Result<uint64_t> ParseSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 15) {
    return Status::InvalidArgument("--size '" + text +
                                   "': expected a number of bytes with an "
                                   "optional K, M, G or T suffix (e.g. 256M)");
  }
  uint64_t n = std::stoull(text.substr(0, i));
  std::string suffix = text.substr(i);
  for (char& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.size() > 1 && (suffix.substr(1) == "IB" || suffix.substr(1) == "B")) {
    suffix = suffix.substr(0, 1);
  }
  int shift = -1;
  if (suffix.empty() || suffix == "B") shift = 0;
  if (suffix == "K") shift = 10;
  if (suffix == "M") shift = 20;
  if (suffix == "G") shift = 30;
  if (suffix == "T") shift = 40;
  if (shift < 0) {
    return Status::InvalidArgument("--size '" + text + "': unknown suffix '" + text.substr(i) +
                                   "'; use K, M, G or T");
  }
  if (shift > 0 && n > (UINT64_MAX >> shift)) {
    return Status::InvalidArgument("--size '" + text + "' is too large");
  }
  return n << shift;
}

// The backends to run: one named backend (which must be available), or every
// available atomic backend for "all".
Result<std::vector<TrackBackend>> ChooseBackends(const std::string& name) {
  const std::vector<BackendInfo> infos = DescribeBackends(Features());
  std::vector<TrackBackend> out;
  if (name == "all") {
    for (const BackendInfo& b : infos) {
      if (!b.available || !b.atomic) continue;
      PW_ASSIGN_OR_RETURN(TrackBackend parsed, ParseBackend(b.name));
      out.push_back(parsed);
    }
    if (out.empty()) return Status::NotSupported("no tracking backend is available on this kernel");
    return out;
  }
  Result<TrackBackend> parsed = ParseBackend(name);
  if (!parsed.ok()) {
    return Status::InvalidArgument(parsed.status().message() + " (or 'all')");
  }
  for (const BackendInfo& b : infos) {
    if (b.name == name && !b.available) {
      std::string others;
      for (const BackendInfo& o : infos) {
        if (o.available) others += (others.empty() ? "" : ", ") + o.name;
      }
      return Status::NotSupported("backend " + name + " is not available on this kernel: " +
                                  b.reason + "; available: " + others);
    }
  }
  out.push_back(*parsed);
  return out;
}

nlohmann::json ResultJson(const Args& a, const CheckOptions& o, const CheckResult& r) {
  return {{"backend", r.backend},
          {"scenario", r.scenario},
          {"rounds", r.rounds},
          {"writes", r.writes},
          {"pages_compared", r.pages_compared},
          {"lost_writes", r.lost_writes},
          {"ok", r.ok},
          {"pages_reported", r.pages_reported},
          {"scenario_ops", r.scenario_ops},
          {"region_bytes", r.region_bytes},
          {"threads", o.threads},
          {"seconds", a.seconds},
          {"elapsed_seconds", NsToSeconds(static_cast<int64_t>(r.elapsed_ns))},
          {"inject_loss", a.inject_loss},
          {"lost_examples", r.lost_examples}};
}

void PrintHeader() {
  std::printf("%-14s %-9s %8s %12s %12s %8s %10s %8s  %s\n", "backend", "scenario", "rounds",
              "writes", "reported", "ops", "compared", "lost", "result");
}

void PrintRow(const CheckResult& r) {
  std::printf("%-14s %-9s %8llu %12llu %12llu %8llu %10llu %8llu  %s\n", r.backend.c_str(),
              r.scenario.c_str(), static_cast<unsigned long long>(r.rounds),
              static_cast<unsigned long long>(r.writes),
              static_cast<unsigned long long>(r.pages_reported),
              static_cast<unsigned long long>(r.scenario_ops),
              static_cast<unsigned long long>(r.pages_compared),
              static_cast<unsigned long long>(r.lost_writes), r.ok ? "ok" : "LOST WRITES");
  for (const std::string& e : r.lost_examples) std::printf("    %s\n", e.c_str());
  std::fflush(stdout);
}

// Longer than our ~80 lines: option validation, each refusal with its own
// exit status and message, then the runs and their summary; splitting it
// would scatter the exit-status table of pagewise-check(1).
int Run(const Args& a) {
  Result<uint64_t> size = ParseSize(a.size);
  if (!size.ok()) return Fail("check", size.status());
  Result<std::vector<CheckScenario>> scenarios = ParseScenarios(a.scenario);
  if (!scenarios.ok()) return Fail("check", scenarios.status());
  Result<std::vector<TrackBackend>> backends = ChooseBackends(a.backend);
  if (!backends.ok()) return Fail("check", backends.status());

  {
    CheckOptions o;
    o.threads = a.threads;
    o.duration = SecondsToDuration(a.seconds);
    o.size = *size;
    Status valid = ValidateCheckOptions(o);
    if (!valid.ok()) return Fail("check", valid);
  }
  const bool progress = StderrIsTerminal();
  nlohmann::json all = nlohmann::json::array();
  bool failed = false;       // a write was lost, or a run failed
  bool unsupported = false;  // a run needed something this kernel lacks
  if (!a.json) PrintHeader();
  for (TrackBackend backend : *backends) {
    for (CheckScenario scenario : *scenarios) {
      CheckOptions o;
      o.backend = backend;
      o.scenario = scenario;
      o.threads = a.threads;
      o.duration = SecondsToDuration(a.seconds);
      o.size = *size;
      o.seed = a.seed;
      o.inject_loss = a.inject_loss;
      const std::string label =
          std::string(BackendName(backend)) + "/" + std::string(ScenarioName(scenario));
      if (progress) {
        o.progress = [label](const CheckProgress& p) {
          std::fprintf(stderr, "\r\033[K%s  %.1f/%.1f s  rounds %llu  writes %llu", label.c_str(),
                       NsToSeconds(static_cast<int64_t>(p.elapsed_ns)),
                       NsToSeconds(static_cast<int64_t>(p.total_ns)),
                       static_cast<unsigned long long>(p.rounds),
                       static_cast<unsigned long long>(p.writes));
        };
      }
      // `all` runs every scenario the backend can track at all, on the
      // memory this machine has; the rest are listed as not applicable
      // (asked for by name, they fail).
      auto skip = [&](const Status& why) {
        all.push_back({{"backend", std::string(BackendName(backend))},
                       {"scenario", std::string(ScenarioName(scenario))},
                       {"skipped", why.message()}});
        if (!a.json) {
          std::printf("%-14s %-9s n/a: %s\n", std::string(BackendName(backend)).c_str(),
                      std::string(ScenarioName(scenario)).c_str(), why.message().c_str());
        }
      };
      const bool every = a.scenario == "all";
      if (Status applies = CheckApplies(backend, scenario); every && !applies.ok()) {
        skip(applies);
        continue;
      }
      Result<CheckResult> r = RunCheck(o);
      if (progress) std::fprintf(stderr, "\r\033[K");
      // Huge pages in the pool and /dev/kvm are machine setup, not kernel
      // features: `all` lists their scenarios as n/a where they are missing.
      const bool setup_scenario =
          scenario == CheckScenario::kHugetlb || scenario == CheckScenario::kKvm;
      if (!r.ok() && every && setup_scenario && r.status().code() == Code::kNotSupported) {
        skip(r.status());
        continue;
      }
      if (!r.ok()) {
        if (r.status().code() == Code::kNotSupported) {
          unsupported = true;
        } else {
          failed = true;
        }
        std::fprintf(stderr, "pagewise check %s: %s\n", label.c_str(),
                     r.status().ToString().c_str());
        all.push_back({{"backend", std::string(BackendName(backend))},
                       {"scenario", std::string(ScenarioName(scenario))},
                       {"ok", false},
                       {"error", r.status().ToString()}});
        if (!a.json) {
          std::printf("%-14s %-9s %s\n", std::string(BackendName(backend)).c_str(),
                      std::string(ScenarioName(scenario)).c_str(),
                      ("ERROR: " + r.status().ToString()).c_str());
          std::fflush(stdout);
        }
        continue;
      }
      failed = failed || !r->ok;
      all.push_back(ResultJson(a, o, *r));
      if (!a.json) PrintRow(*r);
    }
  }
  if (a.json) {
    std::cout << (all.size() == 1 ? all[0] : all).dump(2) << std::endl;
  } else {
    std::printf("%s\n", failed || unsupported ? "FAILED: see the rows above"
                                              : "all runs ok: no write was lost");
  }
  return failed ? 1 : unsupported ? 3 : 0;
}

CommandRegistration reg(
    "check", "Prove on this kernel that tracking never loses a write", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<Args>();
      app->add_option(
             "--backend", a->backend,
             "Tracking backend: auto, uffd-wp-async, uffd-wp, mprotect, soft-dirty, two-step "
             "(a non-atomic negative control that loses writes), or all (every available "
             "atomic backend)")
          ->capture_default_str();
      app->add_option("--scenario", a->scenario,
                      "writes, dontneed, mprotect, fork, thp, shmem, syscall, hugetlb, kvm, "
                      "or all")
          ->capture_default_str();
      app->add_option("--threads", a->threads, "Writer threads")->capture_default_str();
      app->add_option("--seconds", a->seconds, "Writing time per run")->capture_default_str();
      app->add_option("--size", a->size, "Region size, e.g. 32M, 1G")->capture_default_str();
      app->add_option("--seed", a->seed, "Random seed (0: from the clock)");
      app->add_flag("--inject-loss", a->inject_loss,
                    "Self-test: drop one reported page per collect; the check must then fail");
      app->add_flag("--json", a->json, "JSON output (an object, or an array for several runs)");
      return [a]() -> int { return Run(*a); };
    });

}  // namespace
}  // namespace pagewise::cli
