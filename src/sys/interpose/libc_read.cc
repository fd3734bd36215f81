// libpagewise-interpose: the read family, for kernel writes into memory the
// mprotect tracking backend keeps read-only.
//
// The mprotect backend keeps unwritten tracked pages PROT_READ and learns of
// a write from the SIGSEGV it raises. A system call that stores into such a
// page raises no signal: the kernel's copy fails and the call returns EFAULT
// (read(2) from a pipe into a tracked buffer would break a correct program).
// libpagewise-interpose therefore defines read, pread, pread64, readv, preadv,
// preadv64, preadv2, preadv64v2, recv, recvfrom, recvmsg and the fortified
// __read_chk, __pread_chk, __pread64_chk, __recv_chk, __recvfrom_chk
// (this file). While an opener is installed (the mprotect backend),
// each call first hands every destination the kernel may write (buffers,
// iovec targets, recvfrom's address and length, recvmsg's msghdr, name and
// control buffers) to the opener, which write-faults the tracked pages among
// them (records them as written and makes them writable), then forwards the
// call to the kernel through src/sys/raw_io.h.
//
// The race with Collect(): a collect may re-protect an opened page before
// the kernel copies into it. The copy then faults: with no byte copied the
// call fails with EFAULT, with some bytes copied it returns the short count.
// On EFAULT the call is opened again and retried (at most
// PAGEWISE_KERNEL_WRITE_ATTEMPTS times) when retrying cannot lose data: regular files and block
// devices (nothing consumed), pipes and stream sockets (pipe_read and the TCP/unix stream receive
// paths leave the data queued when the first copy faults), and MSG_PEEK. Other descriptors
// (datagram and seqpacket sockets, eventfd, signalfd, timerfd, inotify, ttys, userfaultfd, ...) may
// dequeue before they copy: for them EFAULT is returned, as the kernel reported it. Destinations
// are opened last to first, since the kernel copies first to last: a collect landing while the
// pages are opened then costs a short count, and EFAULT needs it to land between the last opening
// and the call. recvfrom's address and recvmsg's header, name and control buffer are written after
// the data: a collect during a blocking receive can make that write fail after the data was
// consumed (the tracker.h contract says so).
//
// Without an opener (no mprotect tracker), or when no destination overlaps a
// tracked page, the calls go straight to the kernel. In sanitizer builds
// they go to the sanitizer runtime's interceptor (__interceptor_read, ...)
// instead of the raw syscall, so that ASan still checks the buffers and TSan
// still sees the happens-before edges of pipes and sockets; our strong
// definitions override the runtimes' weak ones.
//
// Thread safety: the interposers are thread safe and, like libc's,
// async-signal-safe: no allocation and no lock; the opener must be too.
// Differences from libc: the raw calls are not pthread cancellation points.
//
// Fortification would turn read() and friends into inline wrappers in the
// glibc headers, which this file defines itself; and a 64-bit file offset
// request would rename pread to pread64. Neither may apply here.
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

#include "sys/interpose/interpose.h"
#include "sys/raw_io.h"

static_assert(sizeof(off_t) == 8, "pread and pread64 must take the same offset type");

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PAGEWISE_SANITIZER_INTERCEPTS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PAGEWISE_SANITIZER_INTERCEPTS 1
#endif
#endif

#ifdef PAGEWISE_SANITIZER_INTERCEPTS
// The sanitizer runtimes' interceptors (weak: absent ones are null). They
// do the sanitizer's bookkeeping and then call libc's function.
extern "C" {
ssize_t __interceptor_read(int, void*, size_t) __attribute__((weak));
ssize_t __interceptor_pread64(int, void*, size_t, off_t) __attribute__((weak));
ssize_t __interceptor_readv(int, const struct iovec*, int) __attribute__((weak));
ssize_t __interceptor_preadv64(int, const struct iovec*, int, off_t) __attribute__((weak));
ssize_t __interceptor_preadv(int, const struct iovec*, int, off_t) __attribute__((weak));
ssize_t __interceptor_recvfrom(int, void*, size_t, int, struct sockaddr*, socklen_t*)
    __attribute__((weak));
ssize_t __interceptor_recvmsg(int, struct msghdr*, int) __attribute__((weak));
}
#define PW_FORWARD(name, raw_call, ...) \
  (&__interceptor_##name != nullptr ? __interceptor_##name(__VA_ARGS__) : (raw_call))
#else
#define PW_FORWARD(name, raw_call, ...) (raw_call)
#endif

extern "C" [[noreturn]] void __chk_fail(void);

namespace pagewise::interpose {
namespace {

std::atomic<pagewise_kernel_write_opener> g_opener{nullptr};

size_t Open(pagewise_kernel_write_opener opener, const void* p, size_t len) {
  if (p == nullptr || len == 0) return 0;
  const uint64_t start = reinterpret_cast<uint64_t>(p);
  const uint64_t end = start + len < start ? UINT64_MAX : start + len;
  return opener(start, end);
}

// Opens the targets of iov[0..iovcnt). The array is copied through the
// kernel first: an invalid iov must make the call fail with EFAULT, not
// crash here. If the copy is refused (seccomp), the array is read directly.
size_t OpenIovecs(pagewise_kernel_write_opener opener, const struct iovec* iov, int iovcnt) {
  if (iov == nullptr || iovcnt <= 0 || iovcnt > IOV_MAX) return 0;  // the kernel says EINVAL
  size_t opened = 0;
  struct iovec chunk[16];
  for (int done = 0; done < iovcnt;) {
    const int n = std::min(iovcnt - done, 16);
    const struct iovec* src = iov + done;
    if (sys::RawCopyFromSelf(chunk, src, n * sizeof(struct iovec)) == 0) {
      src = chunk;
    } else if (errno == EFAULT) {
      return opened;  // the kernel will fail the call with EFAULT
    }
    for (int i = 0; i < n; ++i) opened += Open(opener, src[i].iov_base, src[i].iov_len);
    done += n;
  }
  return opened;
}

size_t OpenRecvfrom(pagewise_kernel_write_opener opener, void* buf, size_t len,
                    struct sockaddr* addr, socklen_t* addrlen) {
  size_t opened = Open(opener, buf, len);
  if (addr != nullptr && addrlen != nullptr) {
    socklen_t n = 0;
    if (sys::RawCopyFromSelf(&n, addrlen, sizeof n) != 0) {
      if (errno == EFAULT) return opened;  // the kernel will fail the call with EFAULT
      n = *addrlen;
    }
    opened += Open(opener, addrlen, sizeof *addrlen);
    opened += Open(opener, addr, n);
  }
  return opened;
}

size_t OpenRecvmsg(pagewise_kernel_write_opener opener, struct msghdr* msg) {
  if (msg == nullptr) return 0;
  struct msghdr m;
  if (sys::RawCopyFromSelf(&m, msg, sizeof m) != 0) {
    if (errno == EFAULT) return 0;
    m = *msg;
  }
  // The kernel writes back msg_namelen, msg_controllen and msg_flags.
  return Open(opener, msg, sizeof *msg) + Open(opener, m.msg_name, m.msg_namelen) +
         Open(opener, m.msg_control, m.msg_controllen) +
         OpenIovecs(opener, m.msg_iov, static_cast<int>(std::min<size_t>(m.msg_iovlen, IOV_MAX)));
}

// True if re-issuing a call on fd whose first copy faulted (EFAULT, no byte
// copied) cannot lose data: the kernel did not consume anything. Preserves
// errno.
bool RetrySafe(int fd) {
  const int saved = errno;
  bool safe = false;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
      safe = true;  // page cache reads; pipe_read consumes only what it copied
    } else if (S_ISSOCK(st.st_mode)) {
      // TCP and unix stream sockets consume an skb only after copying from
      // it; datagram sockets dequeue the datagram first and drop it on a
      // fault.
      int type = 0;
      socklen_t l = sizeof type;
      safe = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) == 0 && type == SOCK_STREAM;
    }
  }
  errno = saved;
  return safe;
}

// Runs call() with every destination opened first (open(opener) returns the
// number of tracked pages opened). See the top of this file for the retry rule.
template <typename OpenFn, typename CallFn>
ssize_t Guarded(int fd, bool peek, OpenFn&& open, CallFn&& call) {
  const pagewise_kernel_write_opener opener = g_opener.load(std::memory_order_acquire);
  if (opener == nullptr) return call();
  for (int attempt = 1;; ++attempt) {
    const int saved_errno = errno;  // opening must not change what the program sees
    const size_t opened = open(opener);
    errno = saved_errno;
    if (opened == 0) return call();
    const ssize_t n = call();
    // Why a retry is sound for the data: a copy into a page that a
    // concurrent Collect() re-protected after open() faults. If the kernel
    // had copied any byte it returns that short count (not EFAULT), which
    // the program handles like any short read. EFAULT means no byte was
    // copied, and for the descriptors RetrySafe() accepts nothing was
    // consumed either: re-opening and re-issuing the call is
    // indistinguishable from the program having called once, later.
    if (n >= 0 || errno != EFAULT || attempt == PAGEWISE_KERNEL_WRITE_ATTEMPTS) return n;
    if (!peek && !RetrySafe(fd)) return n;
  }
}

}  // namespace

void SetKernelWriteOpener(pagewise_kernel_write_opener opener) {
  g_opener.store(opener, std::memory_order_release);
}

}  // namespace pagewise::interpose

namespace tw = pagewise::interpose;
namespace sys = pagewise::sys;

// The interposers. Like madvise/mprotect (libc_mm.cc), they replace libc's
// symbols for every caller that resolves them to this library.
PAGEWISE_INTERPOSER ssize_t read(int fd, void* buf, size_t len) {
  return tw::Guarded(
      fd, false, [&](pagewise_kernel_write_opener o) { return tw::Open(o, buf, len); },
      [&] { return PW_FORWARD(read, sys::RawRead(fd, buf, len), fd, buf, len); });
}

PAGEWISE_INTERPOSER ssize_t pread64(int fd, void* buf, size_t len, off_t offset) {
  return tw::Guarded(
      fd, false, [&](pagewise_kernel_write_opener o) { return tw::Open(o, buf, len); },
      [&] {
        return PW_FORWARD(pread64, sys::RawPread(fd, buf, len, offset), fd, buf, len, offset);
      });
}

PAGEWISE_INTERPOSER ssize_t pread(int fd, void* buf, size_t len, off_t offset) {
  return pread64(fd, buf, len, offset);
}

PAGEWISE_INTERPOSER ssize_t readv(int fd, const struct iovec* iov, int iovcnt) {
  return tw::Guarded(
      fd, false, [&](pagewise_kernel_write_opener o) { return tw::OpenIovecs(o, iov, iovcnt); },
      [&] { return PW_FORWARD(readv, sys::RawReadv(fd, iov, iovcnt), fd, iov, iovcnt); });
}

PAGEWISE_INTERPOSER ssize_t preadv64(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  return tw::Guarded(
      fd, false, [&](pagewise_kernel_write_opener o) { return tw::OpenIovecs(o, iov, iovcnt); },
      [&] {
        return PW_FORWARD(preadv64, sys::RawPreadv(fd, iov, iovcnt, offset), fd, iov, iovcnt,
                          offset);
      });
}

PAGEWISE_INTERPOSER ssize_t preadv(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  return preadv64(fd, iov, iovcnt, offset);
}

// No sanitizer intercepts preadv2: always the raw call.
PAGEWISE_INTERPOSER ssize_t preadv64v2(int fd, const struct iovec* iov, int iovcnt, off_t offset,
                                       int flags) {
  return tw::Guarded(
      fd, false, [&](pagewise_kernel_write_opener o) { return tw::OpenIovecs(o, iov, iovcnt); },
      [&] { return sys::RawPreadv2(fd, iov, iovcnt, offset, flags); });
}

PAGEWISE_INTERPOSER ssize_t preadv2(int fd, const struct iovec* iov, int iovcnt, off_t offset,
                                    int flags) {
  return preadv64v2(fd, iov, iovcnt, offset, flags);
}

PAGEWISE_INTERPOSER ssize_t recvfrom(int fd, void* buf, size_t len, int flags,
                                     struct sockaddr* addr, socklen_t* addrlen) {
  return tw::Guarded(
      fd, (flags & MSG_PEEK) != 0,
      [&](pagewise_kernel_write_opener o) { return tw::OpenRecvfrom(o, buf, len, addr, addrlen); },
      [&] {
        return PW_FORWARD(recvfrom, sys::RawRecvfrom(fd, buf, len, flags, addr, addrlen), fd, buf,
                          len, flags, addr, addrlen);
      });
}

PAGEWISE_INTERPOSER ssize_t recv(int fd, void* buf, size_t len, int flags) {
  return recvfrom(fd, buf, len, flags, nullptr, nullptr);
}

PAGEWISE_INTERPOSER ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
  return tw::Guarded(
      fd, (flags & MSG_PEEK) != 0,
      [&](pagewise_kernel_write_opener o) { return tw::OpenRecvmsg(o, msg); },
      [&] { return PW_FORWARD(recvmsg, sys::RawRecvmsg(fd, msg, flags), fd, msg, flags); });
}

// The fortified entry points (-D_FORTIFY_SOURCE programs call these); glibc's
// would reach the kernel through its internal read, bypassing the above.
PAGEWISE_INTERPOSER ssize_t __read_chk(int fd, void* buf, size_t len, size_t buflen) {
  if (len > buflen) __chk_fail();
  return read(fd, buf, len);
}

PAGEWISE_INTERPOSER ssize_t __pread64_chk(int fd, void* buf, size_t len, off_t offset,
                                          size_t buflen) {
  if (len > buflen) __chk_fail();
  return pread64(fd, buf, len, offset);
}

PAGEWISE_INTERPOSER ssize_t __pread_chk(int fd, void* buf, size_t len, off_t offset,
                                        size_t buflen) {
  if (len > buflen) __chk_fail();
  return pread64(fd, buf, len, offset);
}

PAGEWISE_INTERPOSER ssize_t __recv_chk(int fd, void* buf, size_t len, size_t buflen, int flags) {
  if (len > buflen) __chk_fail();
  return recvfrom(fd, buf, len, flags, nullptr, nullptr);
}

PAGEWISE_INTERPOSER ssize_t __recvfrom_chk(int fd, void* buf, size_t len, size_t buflen, int flags,
                                           struct sockaddr* addr, socklen_t* addrlen) {
  if (len > buflen) __chk_fail();
  return recvfrom(fd, buf, len, flags, addr, addrlen);
}
