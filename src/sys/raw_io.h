// Raw read-family system calls that bypass libc's wrappers.
//
// With the mprotect tracking backend, pagewise interposes libc's read(2),
// pread(2), readv(2), preadv(2), preadv2(2), recv(2), recvfrom(2) and
// recvmsg(2) (src/track/kernel_writes.h) so that a destination in tracked
// memory is made writable before the kernel copies into it. The interposers
// reach the kernel through these functions, which call syscall() directly
// and therefore never recurse into the interposers.
//
// Differences from libc: these are not pthread cancellation points (libc's
// read and friends are), and they do not restart on EINTR (neither does
// libc). Thread safety: stateless and async-signal-safe (one syscall each).
#ifndef PAGEWISE_SYS_RAW_IO_H_
#define PAGEWISE_SYS_RAW_IO_H_

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

namespace pagewise::sys {

// Same contract as the libc functions: the byte count, or -1 with errno set.
ssize_t RawRead(int fd, void* buf, size_t len);
ssize_t RawPread(int fd, void* buf, size_t len, off_t offset);
ssize_t RawReadv(int fd, const struct iovec* iov, int iovcnt);
ssize_t RawPreadv(int fd, const struct iovec* iov, int iovcnt, off_t offset);
// offset -1 means "the file position", as for preadv2(2).
ssize_t RawPreadv2(int fd, const struct iovec* iov, int iovcnt, off_t offset, int flags);
// recv(2) is recvfrom with no address.
ssize_t RawRecvfrom(int fd, void* buf, size_t len, int flags, struct sockaddr* addr,
                    socklen_t* addrlen);
ssize_t RawRecvmsg(int fd, struct msghdr* msg, int flags);

// Copies len bytes at `from` in this process to `to` with process_vm_readv(2),
// so that an invalid `from` yields -1 with errno EFAULT instead of a SIGSEGV.
// Returns 0 on a complete copy, -1 with errno set otherwise (EFAULT: some
// byte of `from` is not readable; EPERM/ENOSYS: the call is not allowed).
int RawCopyFromSelf(void* to, const void* from, size_t len);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_RAW_IO_H_
