// pagewise: entry point. Parses the command line (app.h) and runs the
// command registered in cli/cmd_*.cc that it names.
#include <unistd.h>

#include "app.h"
#include "command.h"
#include "pagewise/host.h"

namespace pagewise::cli {

bool StderrIsTerminal() { return IsTerminal(STDERR_FILENO); }

}  // namespace pagewise::cli

int main(int argc, char** argv) {
  pagewise::cli::CommandLine cl;
  int rc = 2;
  const pagewise::cli::RunFn run = cl.Parse(argc, argv, &rc);
  return run ? run() : rc;
}
