// RunInForkedChild implementation.
#include "sys/fork_child.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace pagewise::sys {

Result<int> RunInForkedChild(const std::function<int()>& body) {
  const pid_t pid = fork();
  if (pid < 0) return ErrnoStatus(errno, "fork", "free memory or raise the process limit");
  if (pid == 0) _exit(body());
  int wstatus = 0;
  pid_t w;
  do {
    w = waitpid(pid, &wstatus, 0);
  } while (w < 0 && errno == EINTR);
  if (w < 0) return ErrnoStatus(errno, "waitpid for a forked child");
  if (WIFSIGNALED(wstatus)) {
    return Status::Internal("forked child " + std::to_string(pid) + " was killed by signal " +
                            std::to_string(WTERMSIG(wstatus)));
  }
  return WEXITSTATUS(wstatus);
}

}  // namespace pagewise::sys
