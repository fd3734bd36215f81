// Processes and threads: the system calls behind sys/task.h.
#include "sys/task.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace pagewise::sys {

pid_t ThreadId() { return static_cast<pid_t>(syscall(SYS_gettid)); }
pid_t ProcessId() { return getpid(); }

Result<pid_t> Fork() {
  const pid_t pid = fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  return pid;
}

Result<pid_t> ForkRaw() {
  const long pid = syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, 0);
  if (pid < 0) return ErrnoStatus(errno, "clone(SIGCHLD)");
  return static_cast<pid_t>(pid);
}

void ExitChild(int code) { _exit(code); }

Result<bool> ReapChild(pid_t pid, bool block, int* wstatus) {
  for (;;) {
    const pid_t r = waitpid(pid, wstatus, block ? 0 : WNOHANG);
    if (r == pid) return true;
    if (r == 0) return false;
    if (errno == EINTR) continue;
    return ErrnoStatus(errno, "waitpid(" + std::to_string(pid) + ")");
  }
}

Status SignalProcess(pid_t pid, int sig) {
  if (kill(pid, sig) != 0) return ErrnoStatus(errno, "kill(" + std::to_string(pid) + ")");
  return Status::Ok();
}

bool FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns, bool shared) {
  struct timespec ts;
  struct timespec* tp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
    tp = &ts;
  }
  const int op = shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE;
  const long r =
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, expected, tp, nullptr, 0);
  return !(r != 0 && errno == ETIMEDOUT);
}

void FutexWakeAll(std::atomic<uint32_t>* word, bool shared) {
  const int op = shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE;
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, INT32_MAX, nullptr, nullptr, 0);
}

namespace {

// Reads a small /proc file into buf (NUL-terminated); false if it is gone.
bool ReadSmall(const char* path, char* buf, size_t cap) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n;
  do {
    n = read(fd, buf, cap - 1);
  } while (n < 0 && errno == EINTR);
  close(fd);
  if (n < 0) return false;
  buf[n] = 0;
  return true;
}

}  // namespace

ThreadSched ReadThreadSched(pid_t tid) {
  ThreadSched t;
  char path[64];
  char buf[512];
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
  if (!ReadSmall(path, buf, sizeof(buf))) return t;
  // "tid (comm) S ...": the state follows the last ')' (comm may hold any byte).
  const char* close_paren = std::strrchr(buf, ')');
  if (close_paren == nullptr || close_paren[1] != ' ') return t;
  t.exists = true;
  t.state = close_paren[2];
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", tid);
  if (ReadSmall(path, buf, sizeof(buf))) t.cpu_ns = std::strtoull(buf, nullptr, 10);
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", tid);
  if (ReadSmall(path, t.wchan, sizeof(t.wchan))) {
    // (a name longer than the buffer is cut: prefixes are what we compare)
  }
  return t;
}

}  // namespace pagewise::sys
