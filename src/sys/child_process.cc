// ChildProcess: posix_spawn, a stdout pipe, waitpid, /proc/PID/status.
#include "sys/child_process.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace pagewise::sys {

Result<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(const std::string& path,
                                                          const std::vector<std::string>& args) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe for " + path + "'s stdout");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int err = posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  if (err != 0) {
    close(out[0]);
    return ErrnoStatus(err, "starting " + path);
  }
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, out[0]));
}

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    Wait().status().IgnoreError();  // teardown: the exit status is of no interest
  }
  close(out_fd_);
}

Status ChildProcess::WaitForLine(const std::string& text, int timeout_ms, std::string* line) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    size_t nl;
    while ((nl = buffered_.find('\n')) != std::string::npos) {
      std::string l = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      if (l.find(text) != std::string::npos) {
        if (line != nullptr) *line = l;
        return Status::Ok();
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      return Status(Code::kRetry, 0,
                    "no line with '" + text + "' from the child within " +
                        std::to_string(timeout_ms) + " ms");
    }
    struct pollfd p = {out_fd_, POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno != EINTR) return ErrnoStatus(errno, "waiting for the child's output");
    if (n <= 0) continue;
    char buf[4096];
    const ssize_t got = read(out_fd_, buf, sizeof(buf));
    if (got == 0)
      return Status::PeerGone("the child closed its stdout before printing '" + text + "'");
    if (got < 0 && errno != EINTR) return ErrnoStatus(errno, "reading the child's output");
    if (got > 0) buffered_.append(buf, static_cast<size_t>(got));
  }
}

std::string ChildProcess::ReadRest() {
  std::string out = std::move(buffered_);
  buffered_.clear();
  char buf[4096];
  for (;;) {
    const ssize_t got = read(out_fd_, buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  return out;
}

Status ChildProcess::Signal(int sig) {
  if (reaped_) return Status::FailedPrecondition("the child was already reaped");
  if (kill(pid_, sig) != 0) return ErrnoStatus(errno, "kill(" + std::to_string(pid_) + ")");
  return Status::Ok();
}

Result<int> ChildProcess::Wait() {
  if (reaped_) return Status::FailedPrecondition("the child was already reaped");
  int ws = 0;
  pid_t w;
  do {
    w = waitpid(pid_, &ws, 0);
  } while (w < 0 && errno == EINTR);
  if (w < 0) return ErrnoStatus(errno, "waitpid(" + std::to_string(pid_) + ")");
  reaped_ = true;
  if (WIFEXITED(ws)) return WEXITSTATUS(ws);
  return 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
}

Result<uint64_t> ChildProcess::PeakRssBytes() const {
  const std::string path = "/proc/" + std::to_string(pid_) + "/status";
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "opening " + path);
  std::string text;
  char buf[4096];
  ssize_t got;
  while ((got = read(fd, buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(got));
  close(fd);
  const size_t at = text.find("VmHWM:");
  if (at == std::string::npos) return Status::NotFound("no VmHWM line in " + path);
  return std::strtoull(text.c_str() + at + 6, nullptr, 10) * 1024;
}

Result<std::string> SelfExePath() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n < 0) return ErrnoStatus(errno, "readlink(/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace pagewise::sys
