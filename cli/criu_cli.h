// `pagewise import --criu DIR IMAGE`: the import command's hook into the
// CRIU commands (cli/cmd_criu.cc).
//
// Thread safety: called from the CLI's main thread only.
#ifndef PAGEWISE_CLI_CRIU_CLI_H_
#define PAGEWISE_CLI_CRIU_CLI_H_

#include <string>

namespace pagewise::cli {

// Imports the CRIU dump at `dir` as `image`; prints a summary (JSON with
// json). Returns the exit status.
int RunCriuImport(const std::string& dir, const std::string& image, const std::string& compress,
                  int level, bool json);

}  // namespace pagewise::cli

#endif  // PAGEWISE_CLI_CRIU_CLI_H_
