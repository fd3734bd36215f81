// Helpers for the hostile-client tests (tests/serve_hostile_*_test.cc):
//   - HonestClient: a Firecracker-style client in a forked child (uffd with
//     EVENT_REMOVE, regions registered MISSING, one handshake message) that
//     checks every byte of the first half of its memory, reports, waits to
//     be released, then checks every byte of the rest: run beside attacks,
//     it proves the server kept serving it exactly through them;
//   - raw connections that send any body with any descriptors;
//   - EventLog: the server's ServeEvents, waitable;
//   - OpenFds: descriptors of this process (to prove none leaked);
//   - CliServer: the built `pagewise serve` as a child process (also used by
//     the Firecracker-client tests, tests/serve_firecracker_util.h).
// Header-only, for tests.
//
// Thread safety: EventLog is safe from any thread; the rest is used by the
// test's thread.
#ifndef PAGEWISE_TESTS_SERVE_HOSTILE_UTIL_H_
#define PAGEWISE_TESTS_SERVE_HOSTILE_UTIL_H_

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
extern "C" {  // glibc 2.36's header lacks the C++ guard
#include <sys/pidfd.h>
}

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "pagewise/serve.h"
#include "restore/restore_testing.h"
#include "sys/env.h"

namespace pagewise::hostile {

using testing::PatternBuffer;
using testing::Ps;

constexpr int kFailureTimeoutMs = 120000;  // failure detectors only
constexpr Duration kFailureTimeout = std::chrono::milliseconds(kFailureTimeoutMs);
constexpr uint64_t kEventRemove = 1ULL << 3;  // UFFD_FEATURE_EVENT_REMOVE
constexpr uint64_t kEventFork = 1ULL << 1;    // UFFD_FEATURE_EVENT_FORK
constexpr uint64_t kRegisterMissing = 1ULL << 0;

struct Layout {
  uint64_t offset;  // in the memory file
  uint64_t size;
};

// A region of a handshake as JSON, written into `buf` without allocating
// (safe in a child forked from this multi-threaded test process: under
// AddressSanitizer, whose allocator has no fork handler, malloc there can
// wait forever for a lock another thread held at the fork). Returns its
// length, or 0 if it did not fit.
inline size_t FormatRegionJson(char* buf, size_t cap, uint64_t addr, uint64_t size, uint64_t offset,
                               uint64_t ps) {
  const int n =
      std::snprintf(buf, cap,
                    "{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu,"
                    "\"page_size\":%llu}",
                    static_cast<unsigned long long>(addr), static_cast<unsigned long long>(size),
                    static_cast<unsigned long long>(offset), static_cast<unsigned long long>(ps));
  return n > 0 && static_cast<size_t>(n) < cap ? static_cast<size_t>(n) : 0;
}

inline std::string RegionJson(uint64_t addr, uint64_t size, uint64_t offset, uint64_t ps) {
  char buf[160];
  return std::string(buf, FormatRegionJson(buf, sizeof(buf), addr, size, offset, ps));
}

// Connects to `sock` (-1 on failure). Allocates nothing.
inline int Connect(const char* sock) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock, sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}
inline int Connect(const std::string& sock) { return Connect(sock.c_str()); }

// One sendmsg of `len` bytes at `body` carrying `nfds` descriptors by
// SCM_RIGHTS (at most kMaxSentFds; more: false). Allocates nothing, so a
// forked child may call it (see FormatRegionJson).
constexpr size_t kMaxSentFds = 64;
inline bool SendRaw(int sock, const char* body, size_t len, const int* fds, size_t nfds) {
  if (nfds > kMaxSentFds) return false;
  struct iovec iov = {const_cast<char*>(body), len};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSentFds)] = {};
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  return sendmsg(sock, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(len);
}

// One sendmsg of `body` carrying `fds` by SCM_RIGHTS.
inline bool SendMsg(int sock, const std::string& body, const std::vector<int>& fds) {
  return SendRaw(sock, body.data(), body.size(), fds.data(), fds.size());
}

// True once the server closed `sock` (end of stream, after any ready byte).
inline bool SeesEof(int sock) {
  for (;;) {
    struct pollfd pf = {sock, POLLIN, 0};
    if (poll(&pf, 1, kFailureTimeoutMs) != 1) return false;
    char c;
    const ssize_t n = read(sock, &c, 1);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

inline size_t OpenFds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  // the directory's own descriptor
}

// A userfaultfd created here with `features` (0: UFFDIO_API not done).
inline int MakeUffd(uint64_t features, bool api = true) {
  Env* env = Env::Default();
  Result<int> fd = env->UffdCreate(O_CLOEXEC | O_NONBLOCK);
  if (!fd.ok()) return -1;
  if (api && !env->UffdApi(*fd, features, nullptr, nullptr).ok()) return -1;
  return *fd;
}

// For a child forked from this multi-threaded test: sends the one-region
// handshake for [mem, mem + len) at file offset `offset` over the connected
// `sock`, with `uffd`. Allocates nothing (see FormatRegionJson).
inline bool SendOneRegion(int sock, const char* mem, size_t len, uint64_t offset, int uffd) {
  char body[256] = "[";
  const size_t n = FormatRegionJson(body + 1, sizeof(body) - 2, reinterpret_cast<uint64_t>(mem),
                                    len, offset, Ps());
  if (n == 0) return false;
  body[n + 1] = ']';
  return SendRaw(sock, body, n + 2, &uffd, 1);
}

// For a forked child (allocates nothing): maps `len` bytes of anonymous
// memory, registers them MISSING with a new userfaultfd of `features`,
// connects to `sock` and sends the one-region handshake for file offset
// `offset`. Returns the connected socket (and the mapping, the uffd), or
// -1 on any failure.
inline int MapAndHandshake(const char* sock, size_t len, uint64_t offset, uint64_t features,
                           char** mem, int* uffd) {
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  *mem = static_cast<char*>(p);
  *uffd = MakeUffd(features);
  if (*uffd < 0 ||
      !Env::Default()
           ->UffdRegister(*uffd, reinterpret_cast<uint64_t>(p), len, kRegisterMissing, nullptr)
           .ok()) {
    return -1;
  }
  const int s = Connect(sock);
  if (s < 0 || !SendOneRegion(s, *mem, len, offset, *uffd)) return -1;
  return s;
}

// The exit status of child `pid` (128+signal if killed); -1 if it did not
// end within the failure timeout.
inline int WaitExit(pid_t pid) {
  const int pidfd = pidfd_open(pid, 0);
  if (pidfd >= 0) {
    struct pollfd pf = {pidfd, POLLIN, 0};
    const int ready = poll(&pf, 1, kFailureTimeoutMs);
    close(pidfd);
    if (ready != 1) return -1;
  }
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

class HonestClient {
 public:
  ~HonestClient() { Kill(); }

  // SIGKILLs the child (if running) and reaps it.
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      WaitExit(pid_);
      pid_ = -1;
    }
    if (up_ >= 0) close(up_);
    if (down_ >= 0) close(down_);
    up_ = down_ = -1;
  }

  // Forks the client. It maps and registers `layout`, connects to `sock`,
  // checks every byte of the first half of each region against `file`,
  // reports, waits for Finish(), checks the second half and exits 0 iff
  // every byte matched (1: a mismatch, 2: setup failed). The mappings and
  // the handshake are made here, before the fork: the child allocates
  // nothing (see FormatRegionJson), it inherits the mappings untouched
  // (so every page of them still faults) and this process unmaps its copies.
  bool Start(const std::string& sock, const PatternBuffer& file, std::vector<Layout> layout) {
    std::vector<char*> mem;
    std::string body = "[";
    for (size_t i = 0; i < layout.size(); ++i) {
      void* p = mmap(nullptr, layout[i].size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) break;
      mem.push_back(static_cast<char*>(p));
      body += (i ? "," : "") +
              RegionJson(reinterpret_cast<uint64_t>(p), layout[i].size, layout[i].offset, Ps());
    }
    body += "]";
    int up[2] = {-1, -1}, down[2] = {-1, -1};
    const bool ready =
        mem.size() == layout.size() && pipe2(up, O_CLOEXEC) == 0 && pipe2(down, O_CLOEXEC) == 0;
    pid_ = ready ? fork() : -1;
    if (pid_ == 0) {
      close(up[0]);
      close(down[1]);
      _exit(Run(sock.c_str(), file, layout, mem, body, up[1], down[0]));
    }
    for (size_t i = 0; i < mem.size(); ++i) munmap(mem[i], layout[i].size);
    for (int fd : {up[1], down[0]}) {
      if (fd >= 0) close(fd);
    }
    up_ = up[0];
    down_ = down[1];
    return pid_ > 0;
  }

  // True when the child reported its first half exact.
  bool WaitFirstHalf() {
    struct pollfd pf = {up_, POLLIN, 0};
    char c = 0;
    return poll(&pf, 1, kFailureTimeoutMs) == 1 && read(up_, &c, 1) == 1 && c == 'A';
  }

  // Releases the child for its second half; its exit status.
  int Finish() {
    const char c = 'B';
    if (write(down_, &c, 1) != 1) return -1;
    close(down_);
    close(up_);
    up_ = down_ = -1;
    const int rc = WaitExit(pid_);
    pid_ = -1;
    return rc;
  }

 private:
  // The child: allocates nothing (it was forked from a multi-threaded
  // process); everything it needs was made before the fork.
  static int Run(const char* sock, const PatternBuffer& file, const std::vector<Layout>& layout,
                 const std::vector<char*>& mem, const std::string& body, int up, int down) {
    const int uffd = MakeUffd(kEventRemove);
    if (uffd < 0) return 2;
    for (size_t i = 0; i < layout.size(); ++i) {
      if (!Env::Default()
               ->UffdRegister(uffd, reinterpret_cast<uint64_t>(mem[i]), layout[i].size,
                              kRegisterMissing, nullptr)
               .ok())
        return 2;
    }
    const int s = Connect(sock);
    if (s < 0 || !SendRaw(s, body.data(), body.size(), &uffd, 1)) return 2;
    auto check = [&](bool second) {
      size_t bad = 0;
      for (size_t r = 0; r < layout.size(); ++r) {
        const size_t pages = layout[r].size / Ps(), half = pages / 2;
        for (size_t i = second ? half : 0; i < (second ? pages : half); ++i) {
          bad += !file.Matches(mem[r] + i * Ps(), layout[r].offset / Ps() + i);
        }
      }
      return bad;
    };
    if (check(false) != 0) return 1;
    char c = 'A';
    if (write(up, &c, 1) != 1 || read(down, &c, 1) != 1) return 2;
    return check(true) == 0 ? 0 : 1;
  }

  pid_t pid_ = -1;
  int up_ = -1;
  int down_ = -1;
};

// `pagewise serve ARGS` as a child process (PAGEWISE_CLI_PATH), its stdout
// and stderr collected.
class CliServer {
 public:
  ~CliServer() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      WaitExit(pid_);
    }
  }

  // Starts it; `nofile` > 0 sets its RLIMIT_NOFILE.
  bool Spawn(const std::vector<std::string>& args, rlim_t nofile = 0) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return false;
    std::vector<std::string> argv_s = {PAGEWISE_CLI_PATH, "serve"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      if (nofile > 0) {
        struct rlimit rl = {nofile, nofile};
        setrlimit(RLIMIT_NOFILE, &rl);
      }
      execv(PAGEWISE_CLI_PATH, argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    out_ = out[0];
    err_ = err[0];
    return true;
  }

  // Reads stdout up to the "listening on" line; false if it exits first.
  bool WaitListening() {
    while (stdout_.find("listening on") == std::string::npos) {
      if (!ReadOne(out_, &stdout_)) return false;
    }
    return true;
  }

  // Reads stderr until it holds `needle` `count` times.
  bool WaitStderr(const std::string& needle, size_t count = 1) {
    while (Occurrences(stderr_, needle) < count) {
      if (!ReadOne(err_, &stderr_)) return false;
    }
    return true;
  }

  // Sends `sig`, collects the rest of both outputs; the exit status
  // (128+signal if killed).
  int Stop(int sig = SIGTERM) {
    if (pid_ > 0) kill(pid_, sig);
    while (ReadOne(out_, &stdout_)) {
    }
    while (ReadOne(err_, &stderr_)) {
    }
    const int rc = WaitExit(pid_);
    pid_ = -1;
    return rc;
  }

  // Waits for it to exit by itself.
  int Wait() { return Stop(0); }

  // SIGSTOPs it and waits until it is stopped (Stop(SIGKILL) ends it later).
  bool Pause() {
    if (pid_ <= 0 || kill(pid_, SIGSTOP) != 0) return false;
    int st = 0;
    return waitpid(pid_, &st, WUNTRACED) == pid_ && WIFSTOPPED(st);
  }

  pid_t pid() const { return pid_; }
  const std::string& out() const { return stdout_; }
  const std::string& err() const { return stderr_; }

  static size_t Occurrences(const std::string& s, const std::string& needle) {
    size_t n = 0;
    for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
    return n;
  }

 private:
  // One read into *into; false at end of stream or after the timeout.
  static bool ReadOne(int fd, std::string* into) {
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, kFailureTimeoutMs) != 1) return false;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    into->append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
  std::string stdout_, stderr_;
};

// Collects the server's events (ServeOptions::on_event).
class EventLog {
 public:
  std::function<void(const ServeEvent&)> Fn() {
    return [this](const ServeEvent& e) {
      std::lock_guard<std::mutex> lk(mu_);
      events_.push_back(e);
      cv_.notify_all();
    };
  }
  // Waits until `n` events of `kind` were seen; false after the failure timeout.
  bool WaitFor(ServeEvent::Kind kind, size_t n) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, std::chrono::milliseconds(kFailureTimeoutMs),
                        [&] { return CountLocked(kind) >= n; });
  }
  std::vector<ServeEvent> All() const {
    std::lock_guard<std::mutex> lk(mu_);
    return events_;
  }
  size_t Count(ServeEvent::Kind kind) const {
    std::lock_guard<std::mutex> lk(mu_);
    return CountLocked(kind);
  }

 private:
  size_t CountLocked(ServeEvent::Kind kind) const {
    size_t n = 0;
    for (const ServeEvent& e : events_) n += e.kind == kind;
    return n;
  }
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ServeEvent> events_;
};

}  // namespace pagewise::hostile

#endif  // PAGEWISE_TESTS_SERVE_HOSTILE_UTIL_H_
