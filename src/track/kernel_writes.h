// Kernel writes into tracked memory, made visible by interposing libc's
// read-family calls.
//
// The mprotect backend keeps unwritten tracked pages PROT_READ and learns of
// a write from the SIGSEGV it raises. A system call that stores into such a
// page raises no signal: the kernel's copy fails and the call returns EFAULT
// (read(2) from a pipe into a tracked buffer would break a correct program).
// pagewise therefore defines extern "C" read, pread, pread64, readv, preadv,
// preadv64, preadv2, preadv64v2, recv, recvfrom, recvmsg and the fortified
// __read_chk, __pread_chk, __pread64_chk, __recv_chk, __recvfrom_chk
// (kernel_writes.cc). While an opener is installed (the mprotect backend),
// each call first hands every destination the kernel may write (buffers,
// iovec targets, recvfrom's address and length, recvmsg's msghdr, name and
// control buffers) to the opener, which write-faults the tracked pages among
// them (records them as written and makes them writable), then forwards the
// call to the kernel through src/sys/raw_io.h.
//
// The race with Collect(): a collect may re-protect an opened page before
// the kernel copies into it. The copy then faults: with no byte copied the
// call fails with EFAULT, with some bytes copied it returns the short count.
// On EFAULT the call is opened again and retried (at most kMaxAttempts
// times) when retrying cannot lose data: regular files and block devices
// (nothing consumed), pipes and stream sockets (pipe_read and the TCP/unix
// stream receive paths leave the data queued when the first copy faults),
// and MSG_PEEK. Other descriptors (datagram and seqpacket sockets, eventfd,
// signalfd, timerfd, inotify, ttys, userfaultfd, ...) may dequeue before
// they copy: for them EFAULT is returned, as the kernel reported it.
// Destinations are opened last to first, since the kernel copies first to
// last: a collect landing while the pages are opened then costs a short
// count, and EFAULT needs it to land between the last opening and the call.
// recvfrom's address and recvmsg's header, name and control buffer are
// written after the data: a collect during a blocking receive can make that
// write fail after the data was consumed (the tracker.h contract says so).
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
#ifndef PAGEWISE_TRACK_KERNEL_WRITES_H_
#define PAGEWISE_TRACK_KERNEL_WRITES_H_

#include <cstddef>
#include <cstdint>

namespace pagewise::track_internal {

// Makes the tracked pages of [start, end) ready for a kernel write and
// returns how many tracked pages it opened; 0 means none of [start, end) is
// tracked memory the program may write (the call then goes straight to the
// kernel). Must be async-signal-safe, must not allocate or lock, and must
// not touch pages it does not track (an invalid pointer must still yield
// EFAULT, not a signal).
using KernelWriteOpener = size_t (*)(uint64_t start, uint64_t end);

// Installs `opener` (nullptr removes it). One at a time: the mprotect
// backend installs its opener while its tracker exists. An interposer that
// loaded the previous opener may still call it after removal, so an opener
// must stay callable (it reads only process-lifetime state).
void SetKernelWriteOpener(KernelWriteOpener opener);

// Retries of a call whose kernel copy faulted because a collect re-protected
// a destination page in between (see above).
constexpr int kMaxKernelWriteAttempts = 8;

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_KERNEL_WRITES_H_
