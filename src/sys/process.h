// Processes and plain descriptors: the raw calls that CRIU integration,
// its tests and `pagewise bench criu` need (kill, pidfds, spawning
// programs as a user would, waiting for them, writing a status byte).
//
// Spawn runs argv[0] (PATH searched) with its standard descriptors
// redirected to files (default /dev/null: CRIU refuses to dump a program
// holding descriptors it cannot restore), optionally in a new session,
// and returns the pid; the caller reaps it with WaitPid.
//
// Thread safety: stateless wrappers; safe from any thread. Spawn forks:
// the child only calls async-signal-safe functions before execve.
#ifndef PAGEWISE_SYS_PROCESS_H_
#define PAGEWISE_SYS_PROCESS_H_

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::sys {

// kill(2). kPeerGone if the process does not exist.
Status KillProcess(pid_t pid, int sig);
// kill(-pgid, sig): every process of the group.
Status KillGroup(pid_t pgid, int sig);
// True if a process (or zombie) with this pid exists.
bool ProcessExists(pid_t pid);
// getpid(2): this process's pid (never fails).
pid_t SelfPid();

// Writes all of buf to fd (a pipe, socket...), retrying short writes and
// EINTR. No SIGPIPE for sockets is not guaranteed: use for pipes/files.
Status WriteAll(int fd, const void* buf, size_t len);
// Reads up to len bytes (one read(2), EINTR retried). 0 at end of file.
Result<size_t> ReadSome(int fd, void* buf, size_t len);
Status CloseFd(int fd);

// pidfd_open(2). Caller owns the fd.
Result<int> PidfdOpen(pid_t pid);
// Waits until the pidfd's process has exited (readable). true if it has,
// false after timeout_ms (< 0: forever).
Result<bool> WaitPidfd(int pidfd, int timeout_ms);

struct SpawnOptions {
  std::string stdin_path = "/dev/null";
  std::string stdout_path = "/dev/null";  // opened O_WRONLY|O_CREAT|O_TRUNC
  std::string stderr_path = "/dev/null";  // (append when append_output)
  bool append_output = false;
  bool new_session = false;      // setsid() in the child
  std::vector<std::string> env;  // extra NAME=VALUE entries
  int pass_fd = -1;              // >= 0: becomes the child's fd 3
};
// fork + execvp. Errors: fork failure; a program that cannot be executed
// shows up as exit status 127 from WaitPid.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});
// waitpid(2) for one child (EINTR retried). Returns the raw status; with
// nohang, -1 if it is still running.
Result<int> WaitPid(pid_t pid, bool nohang = false);
// Human form of a wait status: "exit 0", "killed by SIGBUS".
std::string DescribeWaitStatus(int status);
// prctl(PR_SET_CHILD_SUBREAPER): orphans below us are reparented to us.
Status BecomeSubreaper();
// pipe2(O_CLOEXEC): fds[0] reads, fds[1] writes.
Status MakePipe(int fds[2]);
// unlink(2); a missing file is not an error.
Status RemoveFile(const std::string& path);
// rmdir(2) of an empty directory; a missing one is not an error.
Status RemoveEmptyDir(const std::string& path);
// Blocks SIGINT and SIGTERM in the calling thread (threads it starts
// afterwards inherit the mask), then WaitTerminationSignal() sigwaits for
// one of them and returns it.
Status BlockTerminationSignals();
int WaitTerminationSignal();
// A signalfd (non-blocking) for SIGINT and SIGTERM, which must be blocked
// (BlockTerminationSignals). Caller owns it.
Result<int> TerminationSignalFd();
// The directory of this process's executable (/proc/self/exe).
Result<std::string> SelfExeDir();
// mkdtemp(3) of PREFIXXXXXXX: a new private directory. Returns its path.
Result<std::string> MakeTempDir(const std::string& prefix);
// isatty(3): true if `fd` is an open terminal; false otherwise (a pipe,
// a file, a closed descriptor).
bool IsTerminalFd(int fd);
// mkfifo(2).
Status MakeFifo(const std::string& path);
// Opens a file with flags (a FIFO with O_RDWR does not block). Caller owns.
Result<int> OpenFd(const std::string& path, int flags);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_PROCESS_H_
