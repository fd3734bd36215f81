// Kernel writes into memory the mprotect backend keeps read-only: the hook
// into libpagewise-interpose's read family (src/sys/interpose/libc_read.cc,
// which explains the protocol, its retry rule and its limits).
//
// The mprotect backend keeps unwritten tracked pages PROT_READ; a system call
// that stores into such a page raises no signal but fails with EFAULT. With
// libpagewise-interpose in the process, read(), pread(), readv(), preadv(),
// preadv2(), recv(), recvfrom(), recvmsg() (and their fortified and 64-bit
// variants) first hand every destination to the opener installed here, which
// write-faults the tracked pages among them, then call the kernel.
//
// Thread safety: SetKernelWriteOpener is thread safe; the opener must be
// async-signal-safe, must not allocate or lock.
#ifndef PAGEWISE_TRACK_KERNEL_WRITES_H_
#define PAGEWISE_TRACK_KERNEL_WRITES_H_

#include <cstddef>
#include <cstdint>

#include "sys/interpose/interpose.h"

namespace pagewise::track_internal {

// Makes the tracked pages of [start, end) ready for a kernel write and
// returns how many tracked pages it opened; 0 means none of [start, end) is
// tracked memory the program may write (the call then goes straight to the
// kernel). Must be async-signal-safe, must not allocate or lock, and must
// not touch pages it does not track (an invalid pointer must still yield
// EFAULT, not a signal).
using KernelWriteOpener = pagewise_kernel_write_opener;

// Installs `opener` (nullptr removes it) in libpagewise-interpose; does
// nothing when the interposers are not linked (InterposersLinked()). One at a
// time: the mprotect backend installs its opener while its tracker exists. An
// interposer that loaded the previous opener may still call it after removal,
// so an opener must stay callable (it reads only process-lifetime state).
void SetKernelWriteOpener(KernelWriteOpener opener);

// Retries of a call whose kernel copy faulted because a collect re-protected
// a destination page in between (see libc_read.cc).
constexpr int kMaxKernelWriteAttempts = PAGEWISE_KERNEL_WRITE_ATTEMPTS;

}  // namespace pagewise::track_internal

#endif  // PAGEWISE_TRACK_KERNEL_WRITES_H_
