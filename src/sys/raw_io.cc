// Raw read-family system calls (see raw_io.h for why they exist).
#include "sys/raw_io.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace pagewise::sys {
namespace {

// preadv/preadv2 take the offset as two longs (low, high); a 64-bit kernel
// uses the low word whole and ignores the high one.
unsigned long OffLo(off_t off) { return static_cast<unsigned long>(off); }
unsigned long OffHi(off_t off) {
  return static_cast<unsigned long>(static_cast<uint64_t>(off) >> 32);
}

}  // namespace

ssize_t RawRead(int fd, void* buf, size_t len) { return syscall(SYS_read, fd, buf, len); }

ssize_t RawPread(int fd, void* buf, size_t len, off_t offset) {
  return syscall(SYS_pread64, fd, buf, len, offset);
}

ssize_t RawReadv(int fd, const struct iovec* iov, int iovcnt) {
  return syscall(SYS_readv, fd, iov, iovcnt);
}

ssize_t RawPreadv(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  return syscall(SYS_preadv, fd, iov, iovcnt, OffLo(offset), OffHi(offset));
}

ssize_t RawPreadv2(int fd, const struct iovec* iov, int iovcnt, off_t offset, int flags) {
  return syscall(SYS_preadv2, fd, iov, iovcnt, OffLo(offset), OffHi(offset), flags);
}

ssize_t RawRecvfrom(int fd, void* buf, size_t len, int flags, struct sockaddr* addr,
                    socklen_t* addrlen) {
  return syscall(SYS_recvfrom, fd, buf, len, flags, addr, addrlen);
}

ssize_t RawRecvmsg(int fd, struct msghdr* msg, int flags) {
  return syscall(SYS_recvmsg, fd, msg, flags);
}

int RawCopyFromSelf(void* to, const void* from, size_t len) {
  if (len == 0) return 0;
  struct iovec local = {to, len};
  struct iovec remote = {const_cast<void*>(from), len};
  const long n = syscall(SYS_process_vm_readv, getpid(), &local, 1, &remote, 1, 0);
  if (n < 0) return -1;
  if (static_cast<size_t>(n) != len) {
    errno = EFAULT;  // a partial copy: the rest of `from` is unreadable
    return -1;
  }
  return 0;
}

}  // namespace pagewise::sys
