// Process and descriptor wrappers (see process.h).
#include "sys/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace pagewise::sys {

Status KillProcess(pid_t pid, int sig) {
  if (pid <= 0) return Status::InvalidArgument("kill: pid " + std::to_string(pid));
  if (kill(pid, sig) != 0) return ErrnoStatus(errno, "kill " + std::to_string(pid));
  return Status::Ok();
}

Status KillGroup(pid_t pgid, int sig) {
  if (pgid <= 1) return Status::InvalidArgument("kill: process group " + std::to_string(pgid));
  if (kill(-pgid, sig) != 0) return ErrnoStatus(errno, "kill group " + std::to_string(pgid));
  return Status::Ok();
}

pid_t SelfPid() { return getpid(); }

bool ProcessExists(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

Status WriteAll(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    const ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "write");
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<size_t> ReadSome(int fd, void* buf, size_t len) {
  for (;;) {
    const ssize_t n = read(fd, buf, len);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) return ErrnoStatus(errno, "read");
  }
}

Status CloseFd(int fd) {
  if (close(fd) != 0) return ErrnoStatus(errno, "close");
  return Status::Ok();
}

Result<int> PidfdOpen(pid_t pid) {
  const long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) return ErrnoStatus(errno, "pidfd_open " + std::to_string(pid));
  return static_cast<int>(fd);
}

Result<bool> WaitPidfd(int pidfd, int timeout_ms) {
  struct pollfd p = {pidfd, POLLIN, 0};
  for (;;) {
    const int n = poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "poll(pidfd)");
    return n > 0;
  }
}

Result<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& o) {
  if (argv.empty()) return Status::InvalidArgument("spawn: empty argv");
  // Everything the child needs is prepared before fork (no allocation after).
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.push_back(*e);
  for (const std::string& e : o.env) env_store.push_back(e);
  std::vector<char*> envp;
  for (const std::string& e : env_store) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const int out_flags = O_WRONLY | O_CREAT | O_CLOEXEC | (o.append_output ? O_APPEND : O_TRUNC);
  const pid_t pid = fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) {
    if (o.new_session) setsid();
    const int in = open(o.stdin_path.c_str(), O_RDONLY | O_CLOEXEC);
    const int out = open(o.stdout_path.c_str(), out_flags, 0644);
    const int err = open(o.stderr_path.c_str(), out_flags, 0644);
    if (in < 0 || out < 0 || err < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    if (o.pass_fd >= 0) {
      if (o.pass_fd == 3) {
        fcntl(3, F_SETFD, 0);
      } else {
        dup2(o.pass_fd, 3);
      }
    }
    // Only 0-2 survive exec: everything else we hold is O_CLOEXEC or closed
    // here (CRIU dumps every descriptor a program holds).
    for (int fd = o.pass_fd >= 0 ? 4 : 3; fd < 1024; ++fd) close(fd);
    // execvpe searches PATH in envp's environment.
    execvpe(args[0], args.data(), envp.data());
    _exit(127);
  }
  return pid;
}

Result<int> WaitPid(pid_t pid, bool nohang) {
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, nohang ? WNOHANG : 0);
    if (r == pid) return status;
    if (r == 0) return -1;
    if (errno != EINTR) return ErrnoStatus(errno, "waitpid " + std::to_string(pid));
  }
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return std::string("killed by SIG") + (name ? name : std::to_string(WTERMSIG(status)).c_str());
  }
  return "status " + std::to_string(status);
}

Status BecomeSubreaper() {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    return ErrnoStatus(errno, "prctl(PR_SET_CHILD_SUBREAPER)");
  }
  return Status::Ok();
}

Status MakePipe(int fds[2]) {
  if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  return Status::Ok();
}

Status RemoveFile(const std::string& path) {
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "unlink " + path);
  return Status::Ok();
}

Status RemoveEmptyDir(const std::string& path) {
  if (rmdir(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "rmdir " + path);
  return Status::Ok();
}

namespace {
sigset_t TermSet() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  return s;
}
}  // namespace

Status BlockTerminationSignals() {
  const sigset_t s = TermSet();
  const int rc = pthread_sigmask(SIG_BLOCK, &s, nullptr);
  if (rc != 0) return ErrnoStatus(rc, "pthread_sigmask");
  return Status::Ok();
}

int WaitTerminationSignal() {
  const sigset_t s = TermSet();
  int sig = 0;
  while (sigwait(&s, &sig) != 0) {
  }
  return sig;
}

Result<int> TerminationSignalFd() {
  const sigset_t s = TermSet();
  const int fd = signalfd(-1, &s, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return ErrnoStatus(errno, "signalfd");
  return fd;
}

Result<std::string> SelfExeDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n < 0) return ErrnoStatus(errno, "readlink /proc/self/exe");
  std::string p(buf, static_cast<size_t>(n));
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

Result<std::string> MakeTempDir(const std::string& prefix) {
  std::string t = prefix + "XXXXXX";
  if (mkdtemp(t.data()) == nullptr) return ErrnoStatus(errno, "mkdtemp " + t);
  return t;
}

bool IsTerminalFd(int fd) { return isatty(fd) == 1; }

Status MakeFifo(const std::string& path) {
  if (mkfifo(path.c_str(), 0600) != 0) return ErrnoStatus(errno, "mkfifo " + path);
  return Status::Ok();
}

Result<int> OpenFd(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  return fd;
}

}  // namespace pagewise::sys
