// The pagewise command line: every registered command (cli/cmd_*.cc) as a
// subcommand of one CLI11 app, and parsing argv into the command to run.
// main() runs what Parse returns; fuzz/cli_args_fuzz.cc parses hostile
// command lines with it and runs nothing.
//
// Thread safety: a CommandLine is used by one thread; build it after static
// initialisation (the registry is complete then).
#ifndef PAGEWISE_CLI_APP_H_
#define PAGEWISE_CLI_APP_H_

#include <CLI/CLI.hpp>
#include <map>

#include "command.h"

namespace pagewise::cli {

class CommandLine {
 public:
  // Adds every registered command and records its usage line (Fail()).
  CommandLine();
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  // Parses argv (argv[0] is the program). Returns the chosen command's run
  // function, or nullptr with *exit_code set: 0 after --help/--version
  // (printed on stdout), 2 for a usage error (the message and the usage
  // line of the command that failed on stderr). `quiet` prints nothing.
  // Once only per CommandLine. The run function refers to this object's
  // state: call it while this object lives.
  RunFn Parse(int argc, const char* const* argv, int* exit_code, bool quiet = false);

 private:
  CLI::App app_;
  std::map<CLI::App*, RunFn> runs_;
};

}  // namespace pagewise::cli

#endif  // PAGEWISE_CLI_APP_H_
