// libFuzzer target for the tool's argument parsing: the whole pagewise
// command line (every registered command's options, their numeric checks,
// ranges, size suffixes and power-of-two validators, cli/app.h) parses an
// arbitrary argv without crashing, hanging or throwing anything but
// CLI11's parse errors, and it answers exactly one of: a command to run,
// help (exit 0) or a usage error (exit 2). Nothing is run.
//
// Input: the arguments after argv[0], separated by NUL bytes (at most 64).
// The `bench` command is not linked in (its sources are the benchmarks').
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "app.h"
#include "command.h"

namespace pagewise::cli {
// The harness never draws progress output.
bool StderrIsTerminal() { return false; }
}  // namespace pagewise::cli

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kMaxArgs = 64;
  std::vector<std::string> args = {"pagewise"};
  std::string cur;
  for (size_t i = 0; i < size && args.size() < kMaxArgs; ++i) {
    if (data[i] == 0) {
      args.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  if (!cur.empty() && args.size() < kMaxArgs) args.push_back(cur);
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);

  pagewise::cli::CommandLine cl;
  int rc = -1;
  const pagewise::cli::RunFn run =
      cl.Parse(static_cast<int>(args.size()), argv.data(), &rc, /*quiet=*/true);
  if (run ? rc != -1 : (rc != 0 && rc != 2)) std::abort();
  return 0;
}
