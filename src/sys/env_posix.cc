// The real-kernel Env, part 2: memory, files, waiting, sockets and
// scheduling (env_posix.h; userfaultfd and PAGEMAP_SCAN are in
// env_posix_uffd.cc). Every raw system call pagewise makes lives in src/sys.
#include "sys/env_posix.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "sys/raw_mm.h"
#include "sys/unix_socket.h"

namespace pagewise {
namespace sys {

std::string PosixEnv::Hex(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string PosixEnv::RangeText(const char* op, uint64_t start, uint64_t len) {
  return std::string(op) + " [" + Hex(start) + ", +" + std::to_string(len) + ")";
}

Result<void*> PosixEnv::Mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  void* p = mmap(addr, len, prot, flags, fd, off);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "mmap len=" + std::to_string(len));
  return p;
}

Status PosixEnv::Munmap(void* addr, size_t len) {
  if (munmap(addr, len) != 0) {
    return ErrnoStatus(errno, RangeText("munmap", reinterpret_cast<uint64_t>(addr), len));
  }
  return Status::Ok();
}

// Mprotect and Madvise bypass libc: pagewise interposes libc's mprotect and
// madvise (src/track/memory_events.h), and its own calls must not be seen
// as the program's.
Status PosixEnv::Mprotect(void* addr, size_t len, int prot) {
  if (sys::RawMprotect(addr, len, prot) != 0) {
    return ErrnoStatus(errno, RangeText("mprotect", reinterpret_cast<uint64_t>(addr), len));
  }
  return Status::Ok();
}

Status PosixEnv::Madvise(void* addr, size_t len, int advice) {
  if (sys::RawMadvise(addr, len, advice) != 0) {
    return ErrnoStatus(errno, RangeText("madvise", reinterpret_cast<uint64_t>(addr), len) +
                                  " advice=" + std::to_string(advice));
  }
  return Status::Ok();
}

Result<void*> PosixEnv::Mremap(void* old_addr, size_t old_len, size_t new_len, int flags,
                               void* new_addr) {
  void* p = mremap(old_addr, old_len, new_len, flags, new_addr);
  if (p == MAP_FAILED) {
    return ErrnoStatus(errno, RangeText("mremap", reinterpret_cast<uint64_t>(old_addr), old_len));
  }
  return p;
}

Result<int> PosixEnv::MemfdCreate(const std::string& name, unsigned flags) {
  int fd = memfd_create(name.c_str(), flags);
  if (fd < 0) return ErrnoStatus(errno, "memfd_create " + name);
  return fd;
}

Result<int> PosixEnv::Open(const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  return fd;
}

Status PosixEnv::Close(int fd) {
  // close(2) must not be retried on EINTR on Linux: the fd is gone anyway.
  if (close(fd) != 0 && errno != EINTR) return ErrnoStatus(errno, "close");
  return Status::Ok();
}

Result<size_t> PosixEnv::Pwrite(int fd, const void* buf, size_t len, off_t off) {
  ssize_t n;
  do {
    n = pwrite(fd, buf, len, off);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "pwrite offset=" + std::to_string(off));
  return static_cast<size_t>(n);
}

Result<size_t> PosixEnv::Pread(int fd, void* buf, size_t len, off_t off) {
  ssize_t n;
  do {
    n = pread(fd, buf, len, off);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "pread offset=" + std::to_string(off));
  return static_cast<size_t>(n);
}

Status PosixEnv::Fsync(int fd) {
  if (fsync(fd) != 0) return ErrnoStatus(errno, "fsync");
  return Status::Ok();
}

Status PosixEnv::Ftruncate(int fd, off_t len) {
  if (ftruncate(fd, len) != 0) return ErrnoStatus(errno, "ftruncate");
  return Status::Ok();
}

Status PosixEnv::Rename(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoStatus(errno, "rename " + from + " -> " + to);
  }
  return Status::Ok();
}

Status PosixEnv::Unlink(const std::string& path) {
  if (unlink(path.c_str()) != 0) return ErrnoStatus(errno, "unlink " + path);
  return Status::Ok();
}

Status PosixEnv::FsyncParentDir(const std::string& path) {
  std::string dir = ".";
  size_t slash = path.rfind('/');
  if (slash == 0)
    dir = "/";
  else if (slash != std::string::npos)
    dir = path.substr(0, slash);
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open directory " + dir);
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  if (rc != 0) return ErrnoStatus(err, "fsync directory " + dir);
  return Status::Ok();
}

Result<uint64_t> PosixEnv::FileSize(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat");
  return static_cast<uint64_t>(st.st_size);
}

Result<int> PosixEnv::EventfdCreate(unsigned initval, int flags) {
  int fd = eventfd(initval, EFD_CLOEXEC | flags);
  if (fd < 0) return ErrnoStatus(errno, "eventfd");
  return fd;
}

Result<int> PosixEnv::Poll(void* pollfds, size_t nfds, int timeout_ms) {
  int n;
  do {
    n = poll(static_cast<struct pollfd*>(pollfds), nfds, timeout_ms);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "poll");
  return n;
}

Result<int> PosixEnv::UnixListen(const std::string& path, int backlog) {
  // Never clobbers: only a stale socket is replaced (sys/unix_socket.h).
  PW_ASSIGN_OR_RETURN(sys::ListeningSocket l, sys::ListenUnixSocket(path, backlog, 0600));
  return l.fd;
}

Result<int> PosixEnv::Accept(int listen_fd) {
  int fd;
  do {
    fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "accept");
  return fd;
}

Result<int> PosixEnv::UnixConnect(const std::string& path) {
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("socket path too long: " + path);
  }
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket(AF_UNIX)");
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return ErrnoStatus(err, "connect " + path,
                       "is `pagewise serve --socket " + path + "` running?");
  }
  return fd;
}

Result<size_t> PosixEnv::SendWithFd(int sock, const void* buf, size_t len, int pass_fd) {
  struct iovec iov = {const_cast<void*>(buf), len};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (pass_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "sendmsg");
  return static_cast<size_t>(n);
}

Result<size_t> PosixEnv::RecvWithFd(int sock, void* buf, size_t len, int* received_fd) {
  *received_fd = -1;
  struct iovec iov = {buf, len};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "recvmsg");
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < nfds; ++i) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (*received_fd < 0)
          *received_fd = fd;
        else
          close(fd);  // only one descriptor is expected; do not leak extras
      }
    }
  }
  return static_cast<size_t>(n);
}

Result<pid_t> PosixEnv::PeerPid(int sock) {
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus(errno, "getsockopt(SO_PEERCRED)");
  }
  return cred.pid;
}

Status PosixEnv::AdjustThreadNice(int increment) {
  // PRIO_PROCESS with a thread id addresses that one thread on Linux.
  const id_t tid = static_cast<id_t>(gettid());
  errno = 0;
  const int now = getpriority(PRIO_PROCESS, tid);  // -1 is a valid value
  if (now == -1 && errno != 0) return ErrnoStatus(errno, "getpriority(thread)");
  const int want = std::clamp(now + increment, -20, 19);
  if (setpriority(PRIO_PROCESS, tid, want) != 0) {
    return ErrnoStatus(errno, "setpriority(thread, " + std::to_string(want) + ")");
  }
  return Status::Ok();
}

}  // namespace sys

Env* Env::Default() {
  static sys::PosixEnv* env = new sys::PosixEnv();  // never destroyed: usable during exit
  return env;
}

size_t PageSize() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

}  // namespace pagewise
