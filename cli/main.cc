// pagewise: entry point. Dispatches to the commands registered in cli/cmd_*.cc.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <map>

#include "command.h"
#include "pagewise/version.h"

namespace pagewise::cli {

std::vector<Command>& Commands() {
  static std::vector<Command>* commands = new std::vector<Command>();
  return *commands;
}

int Fail(const std::string& cmd, const Status& status) {
  std::fprintf(stderr, "pagewise %s: %s\n", cmd.c_str(), status.ToString().c_str());
  switch (status.code()) {
    case Code::kInvalidArgument:
      return 2;
    case Code::kNotSupported:
      return 3;
    default:
      return 1;
  }
}

bool StderrIsTerminal() { return isatty(STDERR_FILENO) == 1; }

}  // namespace pagewise::cli

int main(int argc, char** argv) {
  using pagewise::cli::Commands;
  CLI::App app{"pagewise: track, snapshot, store and lazily restore process memory, page by page"};
  app.set_version_flag("--version", std::string("pagewise ") + pagewise::Version());
  app.require_subcommand(1);
  std::map<CLI::App*, pagewise::cli::RunFn> runs;
  for (const auto& cmd : Commands()) {
    CLI::App* sub = app.add_subcommand(cmd.name, cmd.help);
    runs[sub] = cmd.setup(sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& [sub, run] : runs) {
    if (sub->parsed()) return run();
  }
  return 2;
}
