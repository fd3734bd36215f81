// The pagewise command line (app.h), the command registry (command.h) and
// the helpers every command shares: usage lines, exit statuses, checks.
#include "app.h"

#include <cstdio>
#include <map>
#include <string>

#include "command.h"
#include "pagewise/version.h"

namespace pagewise::cli {

std::vector<Command>& Commands() {
  static std::vector<Command>* commands = new std::vector<Command>();
  return *commands;
}

namespace {
std::map<std::string, std::string>& Usages() {
  static auto* usages = new std::map<std::string, std::string>();
  return *usages;
}
}  // namespace

void SetUsage(const std::string& cmd, std::string usage) { Usages()[cmd] = std::move(usage); }

int Fail(const std::string& cmd, const Status& status) {
  std::fprintf(stderr, "pagewise %s: %s\n", cmd.c_str(), status.ToString().c_str());
  switch (status.code()) {
    case Code::kInvalidArgument: {
      auto it = Usages().find(cmd);
      if (it != Usages().end()) std::fprintf(stderr, "%s", it->second.c_str());
      return 2;
    }
    case Code::kNotSupported:
      return 3;
    default:
      return 1;
  }
}

CLI::Validator PowerOfTwoIn(uint64_t min, uint64_t max) {
  return CLI::Validator(
      [min, max](std::string& v) -> std::string {
        uint64_t n = 0;
        if (!CLI::detail::lexical_cast(v, n) || n < min || n > max || (n & (n - 1)) != 0) {
          return "must be a power of two from " + std::to_string(min) + " to " +
                 std::to_string(max) + ", not " + v;
        }
        return std::string();
      },
      "POWER_OF_TWO in [" + std::to_string(min) + " - " + std::to_string(max) + "]");
}

CommandLine::CommandLine()
    : app_("pagewise: track, snapshot, store and lazily restore process memory, page by page") {
  app_.set_version_flag("--version", std::string("pagewise ") + Version());
  app_.require_subcommand(1);
  const CLI::Formatter usage;  // the default formatter, for usage lines
  for (const auto& cmd : Commands()) {
    CLI::App* sub = app_.add_subcommand(cmd.name, cmd.help);
    runs_[sub] = cmd.setup(sub);
    SetUsage(cmd.name, usage.make_usage(sub, "pagewise " + cmd.name) +
                           "Run with --help for more information.\n");
  }
}

RunFn CommandLine::Parse(int argc, const char* const* argv, int* exit_code, bool quiet) {
  try {
    app_.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help, --version
      *exit_code = quiet ? 0 : app_.exit(e);
      return nullptr;
    }
    // A usage error: the message and the usage line of the command that
    // failed to parse (the tool's own when none did), exit status 2.
    *exit_code = 2;
    if (quiet) return nullptr;
    const CLI::Formatter usage;
    const CLI::App* failed = &app_;
    std::string name = "pagewise";
    for (const auto& [sub, run] : runs_) {
      if (sub->parsed()) {
        failed = sub;
        name = "pagewise " + sub->get_name();
      }
    }
    std::fprintf(stderr, "%s: %s\n%sRun with --help for more information.\n", name.c_str(),
                 e.what(), usage.make_usage(failed, name).c_str());
    return nullptr;
  }
  for (auto& [sub, run] : runs_) {
    if (sub->parsed()) return run;
  }
  *exit_code = 2;
  return nullptr;
}

}  // namespace pagewise::cli
