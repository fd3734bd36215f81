// Raw read-family system calls that bypass libc's wrappers.
//
// libpagewise-interpose (src/sys/interpose/libc_read.cc) defines libc's
// read(2), pread(2), readv(2), preadv(2), preadv2(2), recv(2), recvfrom(2) and
// recvmsg(2) so that, with the mprotect tracking backend, a destination in
// tracked memory is made writable before the kernel copies into it. The
// interposers reach the kernel through these functions, which call syscall()
// directly and therefore never recurse into the interposers. Inline for the
// reason given in raw_mm.h.
//
// Private to src/sys (the interposers are its only users).
//
// Differences from libc: these are not pthread cancellation points (libc's
// read and friends are), and they do not restart on EINTR (neither does
// libc). Thread safety: stateless and async-signal-safe (one syscall each).
#ifndef PAGEWISE_SYS_RAW_IO_H_
#define PAGEWISE_SYS_RAW_IO_H_

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace pagewise::sys {

// preadv/preadv2 take the offset as two longs (low, high); a 64-bit kernel
// uses the low word whole and ignores the high one.
inline unsigned long RawOffLo(off_t off) { return static_cast<unsigned long>(off); }
inline unsigned long RawOffHi(off_t off) {
  return static_cast<unsigned long>(static_cast<uint64_t>(off) >> 32);
}

// Same contract as the libc functions: the byte count, or -1 with errno set.
inline ssize_t RawRead(int fd, void* buf, size_t len) { return syscall(SYS_read, fd, buf, len); }

inline ssize_t RawPread(int fd, void* buf, size_t len, off_t offset) {
  return syscall(SYS_pread64, fd, buf, len, offset);
}

inline ssize_t RawReadv(int fd, const struct iovec* iov, int iovcnt) {
  return syscall(SYS_readv, fd, iov, iovcnt);
}

inline ssize_t RawPreadv(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  return syscall(SYS_preadv, fd, iov, iovcnt, RawOffLo(offset), RawOffHi(offset));
}

// offset -1 means "the file position", as for preadv2(2).
inline ssize_t RawPreadv2(int fd, const struct iovec* iov, int iovcnt, off_t offset, int flags) {
  return syscall(SYS_preadv2, fd, iov, iovcnt, RawOffLo(offset), RawOffHi(offset), flags);
}

// recv(2) is recvfrom with no address.
inline ssize_t RawRecvfrom(int fd, void* buf, size_t len, int flags, struct sockaddr* addr,
                           socklen_t* addrlen) {
  return syscall(SYS_recvfrom, fd, buf, len, flags, addr, addrlen);
}

inline ssize_t RawRecvmsg(int fd, struct msghdr* msg, int flags) {
  return syscall(SYS_recvmsg, fd, msg, flags);
}

// Copies len bytes at `from` in this process to `to` with process_vm_readv(2),
// so that an invalid `from` yields -1 with errno EFAULT instead of a SIGSEGV.
// Returns 0 on a complete copy, -1 with errno set otherwise (EFAULT: some
// byte of `from` is not readable; EPERM/ENOSYS: the call is not allowed).
inline int RawCopyFromSelf(void* to, const void* from, size_t len) {
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

#endif  // PAGEWISE_SYS_RAW_IO_H_
