// The real-kernel Env: every raw system call pagewise makes lives here.
//
// Each method is a thin, faithful wrapper: it passes arguments through,
// retries only EINTR, and reports the kernel's answer unaltered (partial
// progress and errno for the userfaultfd fill ioctls).
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "sys/env.h"
#include "sys/raw_mm.h"
#include "sys/uapi.h"
#include "sys/unix_socket.h"
#include "sys/userfaultfd.h"

namespace pagewise {
namespace {

std::string Hex(uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string RangeText(const char* op, uint64_t start, uint64_t len) {
  return std::string(op) + " [" + Hex(start) + ", +" + std::to_string(len) + ")";
}

// Decodes the result field of a userfaultfd fill ioctl: a byte count, or a
// negative errno when nothing was done.
FillResult FillOutcome(int rc, int64_t field) {
  FillResult r;
  r.bytes = field > 0 ? static_cast<uint64_t>(field) : 0;
  r.error = rc == 0 ? 0 : errno;
  if (rc != 0 && r.error == 0 && field < 0) r.error = static_cast<int>(-field);
  return r;
}

class PosixEnv final : public Env {
 public:
  Result<int> UffdCreate(int flags) override {
    int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
    if (fd >= 0) return fd;
    const int sys_err = errno;
    // The syscall may be refused (EPERM with vm.unprivileged_userfaultfd=0,
    // ENOSYS under some seccomp policies) while /dev/userfaultfd is allowed.
    Result<int> dev = sys::CreateUserfaultfdViaDevice(flags);
    if (dev.ok()) return dev;
    return Status(dev.status().code(), dev.status().err(),
                  "userfaultfd(2) refused (" + std::string(strerror(sys_err)) + ") and " +
                      dev.status().message());
  }

  Status UffdApi(int fd, uint64_t features, uint64_t* granted, uint64_t* ioctls) override {
    struct uffdio_api api = {};
    api.api = UFFD_API;
    api.features = features;
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
      return ErrnoStatus(errno, "UFFDIO_API features=" + Hex(features));
    }
    if (granted) *granted = api.features;
    if (ioctls) *ioctls = api.ioctls;
    return Status::Ok();
  }

  Status UffdRegister(int fd, uint64_t start, uint64_t len, uint64_t mode,
                      uint64_t* ioctls) override {
    struct uffdio_register reg = {};
    reg.range.start = start;
    reg.range.len = len;
    reg.mode = mode;
    if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
      return ErrnoStatus(errno, RangeText("UFFDIO_REGISTER", start, len) + " mode=" + Hex(mode));
    }
    if (ioctls) *ioctls = reg.ioctls;
    return Status::Ok();
  }

  Status UffdUnregister(int fd, uint64_t start, uint64_t len) override {
    struct uffdio_range range = {start, len};
    if (ioctl(fd, UFFDIO_UNREGISTER, &range) != 0) {
      return ErrnoStatus(errno, RangeText("UFFDIO_UNREGISTER", start, len));
    }
    return Status::Ok();
  }

  Status UffdWake(int fd, uint64_t start, uint64_t len) override {
    struct uffdio_range range = {start, len};
    if (ioctl(fd, UFFDIO_WAKE, &range) != 0) {
      return ErrnoStatus(errno, RangeText("UFFDIO_WAKE", start, len));
    }
    return Status::Ok();
  }

  Status UffdWriteProtect(int fd, uint64_t start, uint64_t len, uint64_t mode) override {
    struct uffdio_writeprotect wp = {};
    wp.range.start = start;
    wp.range.len = len;
    wp.mode = mode;
    if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) != 0) {
      return ErrnoStatus(errno,
                         RangeText("UFFDIO_WRITEPROTECT", start, len) + " mode=" + Hex(mode));
    }
    return Status::Ok();
  }

  FillResult UffdCopy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) override {
    struct uffdio_copy c = {};
    c.dst = dst;
    c.src = src;
    c.len = len;
    c.mode = mode;
    int rc = ioctl(fd, UFFDIO_COPY, &c);
    return FillOutcome(rc, c.copy);
  }

  FillResult UffdZeropage(int fd, uint64_t start, uint64_t len, uint64_t mode) override {
    struct uffdio_zeropage z = {};
    z.range.start = start;
    z.range.len = len;
    z.mode = mode;
    int rc = ioctl(fd, UFFDIO_ZEROPAGE, &z);
    return FillOutcome(rc, z.zeropage);
  }

  FillResult UffdMove(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) override {
    struct uffdio_move m = {};
    m.dst = dst;
    m.src = src;
    m.len = len;
    m.mode = mode;
    int rc = ioctl(fd, UFFDIO_MOVE, &m);
    return FillOutcome(rc, m.move);
  }

  FillResult UffdContinue(int fd, uint64_t start, uint64_t len, uint64_t mode) override {
    struct uffdio_continue c = {};
    c.range.start = start;
    c.range.len = len;
    c.mode = mode;
    int rc = ioctl(fd, UFFDIO_CONTINUE, &c);
    return FillOutcome(rc, c.mapped);
  }

  FillResult UffdPoison(int fd, uint64_t start, uint64_t len, uint64_t mode) override {
    struct uffdio_poison p = {};
    p.range.start = start;
    p.range.len = len;
    p.mode = mode;
    int rc = ioctl(fd, UFFDIO_POISON, &p);
    return FillOutcome(rc, p.updated);
  }

  Result<size_t> UffdRead(int fd, UffdEvent* events, size_t max) override {
    constexpr size_t kBatch = 64;
    struct uffd_msg msgs[kBatch];
    if (max > kBatch) max = kBatch;
    // RWF_NOWAIT makes this read non-blocking whatever the fd's O_NONBLOCK
    // says. O_NONBLOCK belongs to the open file, which a page server shares
    // with its client: a client that clears it (or reads its own events
    // between our poll and our read) must not be able to park our thread
    // in a blocking read. Kernels before 6.8 (no read_iter for
    // userfaultfd) answer EOPNOTSUPP/EINVAL: plain read then.
    struct iovec iov = {msgs, sizeof(msgs[0]) * max};
    ssize_t n;
    static std::atomic<bool> nowait_works{true};
    do {
      n = nowait_works.load(std::memory_order_relaxed) ? preadv2(fd, &iov, 1, -1, RWF_NOWAIT) : -1;
      if (n < 0 && (!nowait_works.load(std::memory_order_relaxed) || errno == EOPNOTSUPP)) {
        nowait_works.store(false, std::memory_order_relaxed);
        n = read(fd, msgs, sizeof(msgs[0]) * max);
      }
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN) return size_t{0};
      return ErrnoStatus(errno, "read(userfaultfd)");
    }
    size_t count = static_cast<size_t>(n) / sizeof(msgs[0]);
    for (size_t i = 0; i < count; ++i) {
      const struct uffd_msg& m = msgs[i];
      UffdEvent& e = events[i];
      e = UffdEvent();
      e.raw_event = m.event;
      switch (m.event) {
        case UFFD_EVENT_PAGEFAULT:
          e.kind = UffdEvent::Kind::kPagefault;
          e.flags = m.arg.pagefault.flags;
          e.address = m.arg.pagefault.address;
          e.ptid = m.arg.pagefault.feat.ptid;
          break;
        case UFFD_EVENT_FORK:
          e.kind = UffdEvent::Kind::kFork;
          e.fork_fd = static_cast<int>(m.arg.fork.ufd);
          break;
        case UFFD_EVENT_REMAP:
          e.kind = UffdEvent::Kind::kRemap;
          e.from = m.arg.remap.from;
          e.to = m.arg.remap.to;
          e.len = m.arg.remap.len;
          break;
        case UFFD_EVENT_REMOVE:
          e.kind = UffdEvent::Kind::kRemove;
          e.start = m.arg.remove.start;
          e.end = m.arg.remove.end;
          break;
        case UFFD_EVENT_UNMAP:
          e.kind = UffdEvent::Kind::kUnmap;
          e.start = m.arg.remove.start;
          e.end = m.arg.remove.end;
          break;
        default:
          e.kind = UffdEvent::Kind::kUnknown;
          break;
      }
    }
    return count;
  }

  Result<int> OpenPagemap(pid_t pid) override {
    std::string path =
        pid == 0 ? "/proc/self/pagemap" : "/proc/" + std::to_string(pid) + "/pagemap";
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, "open " + path);
    return fd;
  }

  Result<PagemapScanOut> PagemapScan(int fd, const PagemapScanArgs& a, PageRegion* vec,
                                     size_t vec_len) override {
    static_assert(sizeof(PageRegion) == sizeof(struct page_region));
    struct pm_scan_arg arg = {};
    arg.size = sizeof(arg);
    arg.flags = a.flags;
    arg.start = a.start;
    arg.end = a.end;
    arg.vec = reinterpret_cast<uint64_t>(vec);
    arg.vec_len = vec_len;
    arg.max_pages = a.max_pages;
    arg.category_inverted = a.category_inverted;
    arg.category_mask = a.category_mask;
    arg.category_anyof_mask = a.category_anyof_mask;
    arg.return_mask = a.return_mask;
    int rc;
    do {
      rc = ioctl(fd, PAGEMAP_SCAN, &arg);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
      return ErrnoStatus(errno, RangeText("PAGEMAP_SCAN", a.start, a.end - a.start));
    }
    PagemapScanOut out;
    out.regions = static_cast<size_t>(rc);
    out.walk_end = arg.walk_end;
    return out;
  }

  Result<void*> Mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) override {
    void* p = mmap(addr, len, prot, flags, fd, off);
    if (p == MAP_FAILED) return ErrnoStatus(errno, "mmap len=" + std::to_string(len));
    return p;
  }

  Status Munmap(void* addr, size_t len) override {
    if (munmap(addr, len) != 0) {
      return ErrnoStatus(errno, RangeText("munmap", reinterpret_cast<uint64_t>(addr), len));
    }
    return Status::Ok();
  }

  // Mprotect and Madvise bypass libc: pagewise interposes libc's mprotect and
  // madvise (src/track/memory_events.h), and its own calls must not be seen
  // as the program's.
  Status Mprotect(void* addr, size_t len, int prot) override {
    if (sys::RawMprotect(addr, len, prot) != 0) {
      return ErrnoStatus(errno, RangeText("mprotect", reinterpret_cast<uint64_t>(addr), len));
    }
    return Status::Ok();
  }

  Status Madvise(void* addr, size_t len, int advice) override {
    if (sys::RawMadvise(addr, len, advice) != 0) {
      return ErrnoStatus(errno, RangeText("madvise", reinterpret_cast<uint64_t>(addr), len) +
                                    " advice=" + std::to_string(advice));
    }
    return Status::Ok();
  }

  Result<void*> Mremap(void* old_addr, size_t old_len, size_t new_len, int flags,
                       void* new_addr) override {
    void* p = mremap(old_addr, old_len, new_len, flags, new_addr);
    if (p == MAP_FAILED) {
      return ErrnoStatus(errno, RangeText("mremap", reinterpret_cast<uint64_t>(old_addr), old_len));
    }
    return p;
  }

  Result<int> MemfdCreate(const std::string& name, unsigned flags) override {
    int fd = memfd_create(name.c_str(), flags);
    if (fd < 0) return ErrnoStatus(errno, "memfd_create " + name);
    return fd;
  }

  Result<int> Open(const std::string& path, int flags, mode_t mode) override {
    int fd;
    do {
      fd = open(path.c_str(), flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return ErrnoStatus(errno, "open " + path);
    return fd;
  }

  Status Close(int fd) override {
    // close(2) must not be retried on EINTR on Linux: the fd is gone anyway.
    if (close(fd) != 0 && errno != EINTR) return ErrnoStatus(errno, "close");
    return Status::Ok();
  }

  Result<size_t> Pwrite(int fd, const void* buf, size_t len, off_t off) override {
    ssize_t n;
    do {
      n = pwrite(fd, buf, len, off);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return ErrnoStatus(errno, "pwrite offset=" + std::to_string(off));
    return static_cast<size_t>(n);
  }

  Result<size_t> Pread(int fd, void* buf, size_t len, off_t off) override {
    ssize_t n;
    do {
      n = pread(fd, buf, len, off);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return ErrnoStatus(errno, "pread offset=" + std::to_string(off));
    return static_cast<size_t>(n);
  }

  Status Fsync(int fd) override {
    if (fsync(fd) != 0) return ErrnoStatus(errno, "fsync");
    return Status::Ok();
  }

  Status Ftruncate(int fd, off_t len) override {
    if (ftruncate(fd, len) != 0) return ErrnoStatus(errno, "ftruncate");
    return Status::Ok();
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus(errno, "rename " + from + " -> " + to);
    }
    return Status::Ok();
  }

  Status Unlink(const std::string& path) override {
    if (unlink(path.c_str()) != 0) return ErrnoStatus(errno, "unlink " + path);
    return Status::Ok();
  }

  Status FsyncParentDir(const std::string& path) override {
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

  Result<uint64_t> FileSize(int fd) override {
    struct stat st;
    if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat");
    return static_cast<uint64_t>(st.st_size);
  }

  Result<int> EventfdCreate(unsigned initval, int flags) override {
    int fd = eventfd(initval, EFD_CLOEXEC | flags);
    if (fd < 0) return ErrnoStatus(errno, "eventfd");
    return fd;
  }

  Result<int> Poll(void* pollfds, size_t nfds, int timeout_ms) override {
    int n;
    do {
      n = poll(static_cast<struct pollfd*>(pollfds), nfds, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return ErrnoStatus(errno, "poll");
    return n;
  }

  Result<int> UnixListen(const std::string& path, int backlog) override {
    // Never clobbers: only a stale socket is replaced (sys/unix_socket.h).
    PW_ASSIGN_OR_RETURN(sys::ListeningSocket l, sys::ListenUnixSocket(path, backlog, 0600));
    return l.fd;
  }

  Result<int> Accept(int listen_fd) override {
    int fd;
    do {
      fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return ErrnoStatus(errno, "accept");
    return fd;
  }

  Result<int> UnixConnect(const std::string& path) override {
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

  Result<size_t> SendWithFd(int sock, const void* buf, size_t len, int pass_fd) override {
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

  Result<size_t> RecvWithFd(int sock, void* buf, size_t len, int* received_fd) override {
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

  Result<pid_t> PeerPid(int sock) override {
    struct ucred cred = {};
    socklen_t len = sizeof(cred);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      return ErrnoStatus(errno, "getsockopt(SO_PEERCRED)");
    }
    return cred.pid;
  }

  Status AdjustThreadNice(int increment) override {
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
};

}  // namespace

namespace sys {
Result<int> CreateUserfaultfdViaDevice(int flags) {
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) {
    return ErrnoStatus(errno, "open /dev/userfaultfd",
                       "run as root, set sysctl vm.unprivileged_userfaultfd=1, or grant "
                       "read/write access to /dev/userfaultfd; check CONFIG_USERFAULTFD");
  }
  int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
  const int err = errno;
  close(dev);
  if (fd < 0) {
    return ErrnoStatus(err, "USERFAULTFD_IOC_NEW on /dev/userfaultfd",
                       "grant read/write access to /dev/userfaultfd or run as root");
  }
  return fd;
}
}  // namespace sys

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();  // never destroyed: usable during exit
  return env;
}

size_t PageSize() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

}  // namespace pagewise
