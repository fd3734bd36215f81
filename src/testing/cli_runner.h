// RunCli: runs the built `pagewise` binary from an end-to-end test and
// captures its exit status, stdout and stderr (no shell involved).
//
// Thread safety: each call forks its own child; safe from any thread, but
// callers usually run one at a time.
#ifndef PAGEWISE_TESTING_CLI_RUNNER_H_
#define PAGEWISE_TESTING_CLI_RUNNER_H_

#include <string>
#include <vector>

namespace pagewise::testing {

struct CliResult {
  int exit_code = -1;  // exit status, or 128+signal if killed
  std::string out;
  std::string err;
};

// Runs `binary args...`, waits for it, and returns what it printed.
CliResult RunCli(const std::string& binary, const std::vector<std::string>& args);

}  // namespace pagewise::testing

#endif  // PAGEWISE_TESTING_CLI_RUNNER_H_
