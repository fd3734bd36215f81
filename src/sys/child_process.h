// ChildProcess: a program started with posix_spawn, its stdout read through
// a pipe, for benchmarks that measure a server in its own process (its
// memory is then its own, not the benchmark's).
//
// Thread safety: one object is used from one thread at a time.
#ifndef PAGEWISE_SYS_CHILD_PROCESS_H_
#define PAGEWISE_SYS_CHILD_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::sys {

class ChildProcess {
 public:
  // Starts `path` with argv = {path, args...}, stdin on /dev/null, stdout on
  // a pipe (read with WaitForLine/ReadRest), stderr inherited. Errors: the
  // pipe or the spawn failed (the cause named).
  static Result<std::unique_ptr<ChildProcess>> Spawn(const std::string& path,
                                                     const std::vector<std::string>& args);
  // Kills (SIGKILL) and reaps the child if it still runs; closes the pipe.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Reads stdout until a line containing `text` (returned in *line, if not
  // null). kRetry after timeout_ms; kPeerGone if stdout ended first.
  Status WaitForLine(const std::string& text, int timeout_ms, std::string* line = nullptr);
  // Everything the child writes to stdout from now until it closes it.
  std::string ReadRest();
  Status Signal(int sig);
  // Waits for the child to exit: its exit status, 128 + signal if killed.
  Result<int> Wait();
  // Peak resident set size (VmHWM of /proc/PID/status) in bytes; the child
  // must not have been reaped yet.
  Result<uint64_t> PeakRssBytes() const;

 private:
  ChildProcess(pid_t pid, int out_fd) : pid_(pid), out_fd_(out_fd) {}

  pid_t pid_;
  int out_fd_;
  bool reaped_ = false;
  std::string buffered_;  // stdout read but not yet returned
};

// The path of the running executable (/proc/self/exe resolved).
Result<std::string> SelfExePath();

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_CHILD_PROCESS_H_
