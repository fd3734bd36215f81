// Command registry for the pagewise tool.
//
// Each subcommand lives in its own cli/cmd_*.cc and registers itself with a
// static CommandRegistration, so adding a command touches no shared file.
// Setup adds the subcommand's options to the CLI11 app and returns the
// function that runs it; that function returns the process exit status.
//
// Thread safety: registration happens during static initialisation, before
// main; the registry is read-only afterwards.
#ifndef PAGEWISE_CLI_COMMAND_H_
#define PAGEWISE_CLI_COMMAND_H_

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pagewise/status.h"
#include "pagewise/time.h"

namespace pagewise::cli {

using RunFn = std::function<int()>;
using SetupFn = std::function<RunFn(CLI::App* app)>;

struct Command {
  std::string name;
  std::string help;
  SetupFn setup;
};

// All registered commands, in registration order.
std::vector<Command>& Commands();

struct CommandRegistration {
  CommandRegistration(std::string name, std::string help, SetupFn setup) {
    Commands().push_back({std::move(name), std::move(help), std::move(setup)});
  }
};

// Prints "pagewise <cmd>: <status>" to stderr and returns exit status 1
// (2 for invalid arguments, with the command's usage line; 3 for
// unsupported features).
int Fail(const std::string& cmd, const Status& status);

// Records the usage line Fail() prints for `cmd` (main() sets it for every
// registered command).
void SetUsage(const std::string& cmd, std::string usage);

// A CLI11 check: a power of two in [min, max].
CLI::Validator PowerOfTwoIn(uint64_t min, uint64_t max);

// True when stderr is a terminal (progress output is shown only then).
bool StderrIsTerminal();

// A --seconds style option as a Duration: NaN, zero and negative values give
// zero (the API's validation then names the option), values beyond a year
// give a year.
inline Duration SecondsToDuration(double seconds) {
  if (!(seconds > 0)) return Duration::zero();
  if (seconds > 365.0 * 86400) seconds = 365.0 * 86400;
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(seconds));
}

// Nanoseconds as seconds, for printing (-1 stays -1: "never").
inline double NsToSeconds(int64_t ns) { return ns < 0 ? -1.0 : static_cast<double>(ns) / 1e9; }

}  // namespace pagewise::cli

#endif  // PAGEWISE_CLI_COMMAND_H_
