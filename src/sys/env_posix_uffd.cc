// The real-kernel Env, part 1: userfaultfd and PAGEMAP_SCAN (env_posix.h).
// The only place that fills the uapi structs of their ioctls and decodes
// struct uffd_msg.
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "sys/env_posix.h"
#include "sys/uapi.h"
#include "sys/userfaultfd.h"

namespace pagewise::sys {

namespace {

// Decodes the result field of a userfaultfd fill ioctl: a byte count, or a
// negative errno when nothing was done.
FillResult FillOutcome(int rc, int64_t field) {
  FillResult r;
  r.bytes = field > 0 ? static_cast<uint64_t>(field) : 0;
  r.error = rc == 0 ? 0 : errno;
  if (rc != 0 && r.error == 0 && field < 0) r.error = static_cast<int>(-field);
  return r;
}

}  // namespace

Result<int> PosixEnv::UffdCreate(int flags) {
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

Status PosixEnv::UffdApi(int fd, uint64_t features, uint64_t* granted, uint64_t* ioctls) {
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

Status PosixEnv::UffdRegister(int fd, uint64_t start, uint64_t len, uint64_t mode,
                              uint64_t* ioctls) {
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

Status PosixEnv::UffdUnregister(int fd, uint64_t start, uint64_t len) {
  struct uffdio_range range = {start, len};
  if (ioctl(fd, UFFDIO_UNREGISTER, &range) != 0) {
    return ErrnoStatus(errno, RangeText("UFFDIO_UNREGISTER", start, len));
  }
  return Status::Ok();
}

Status PosixEnv::UffdWake(int fd, uint64_t start, uint64_t len) {
  struct uffdio_range range = {start, len};
  if (ioctl(fd, UFFDIO_WAKE, &range) != 0) {
    return ErrnoStatus(errno, RangeText("UFFDIO_WAKE", start, len));
  }
  return Status::Ok();
}

Status PosixEnv::UffdWriteProtect(int fd, uint64_t start, uint64_t len, uint64_t mode) {
  struct uffdio_writeprotect wp = {};
  wp.range.start = start;
  wp.range.len = len;
  wp.mode = mode;
  if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) != 0) {
    return ErrnoStatus(errno, RangeText("UFFDIO_WRITEPROTECT", start, len) + " mode=" + Hex(mode));
  }
  return Status::Ok();
}

FillResult PosixEnv::UffdCopy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) {
  struct uffdio_copy c = {};
  c.dst = dst;
  c.src = src;
  c.len = len;
  c.mode = mode;
  int rc = ioctl(fd, UFFDIO_COPY, &c);
  return FillOutcome(rc, c.copy);
}

FillResult PosixEnv::UffdZeropage(int fd, uint64_t start, uint64_t len, uint64_t mode) {
  struct uffdio_zeropage z = {};
  z.range.start = start;
  z.range.len = len;
  z.mode = mode;
  int rc = ioctl(fd, UFFDIO_ZEROPAGE, &z);
  return FillOutcome(rc, z.zeropage);
}

FillResult PosixEnv::UffdMove(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode) {
  struct uffdio_move m = {};
  m.dst = dst;
  m.src = src;
  m.len = len;
  m.mode = mode;
  int rc = ioctl(fd, UFFDIO_MOVE, &m);
  return FillOutcome(rc, m.move);
}

FillResult PosixEnv::UffdContinue(int fd, uint64_t start, uint64_t len, uint64_t mode) {
  struct uffdio_continue c = {};
  c.range.start = start;
  c.range.len = len;
  c.mode = mode;
  int rc = ioctl(fd, UFFDIO_CONTINUE, &c);
  return FillOutcome(rc, c.mapped);
}

FillResult PosixEnv::UffdPoison(int fd, uint64_t start, uint64_t len, uint64_t mode) {
  struct uffdio_poison p = {};
  p.range.start = start;
  p.range.len = len;
  p.mode = mode;
  int rc = ioctl(fd, UFFDIO_POISON, &p);
  return FillOutcome(rc, p.updated);
}

Result<size_t> PosixEnv::UffdRead(int fd, UffdEvent* events, size_t max) {
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

Result<int> PosixEnv::OpenPagemap(pid_t pid) {
  std::string path = pid == 0 ? "/proc/self/pagemap" : "/proc/" + std::to_string(pid) + "/pagemap";
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  return fd;
}

Result<PagemapScanOut> PosixEnv::PagemapScan(int fd, const PagemapScanArgs& a, PageRegion* vec,
                                             size_t vec_len) {
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

}  // namespace pagewise::sys
