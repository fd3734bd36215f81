// Signal dispositions and the calls a signal handler may make, for code
// outside src/sys that installs a handler of its own (the mprotect tracking
// backend's SIGSEGV handler, src/track/mprotect_fault.cc) or runs in a child
// forked from a multithreaded process.
//
// GetSignalAction / SetSignalAction are for installing and removing a
// handler (sigaction(2)); they report failure as a Status, so they allocate
// on failure and are not for use inside a handler. The others are
// async-signal-safe: each is one system call, allocates nothing, takes no
// lock and never builds a Status, so a signal handler (or a forked child
// before it exits) may call them.
//
// Thread safety: stateless; safe from any thread. A disposition is
// process-wide: concurrent SetSignalAction calls for one signal race as
// sigaction(2) calls do (the last one wins).
#ifndef PAGEWISE_SYS_SIGNAL_HANDLER_H_
#define PAGEWISE_SYS_SIGNAL_HANDLER_H_

#include <signal.h>
#include <sys/types.h>

#include <cstddef>

#include "pagewise/status.h"

namespace pagewise::sys {

// sigaction(2) query: stores sig's current disposition in *current (not
// null). Errors: ErrnoStatus (EINVAL for an invalid signal number).
Status GetSignalAction(int sig, struct sigaction* current);
// sigaction(2): installs `action` as sig's disposition. Errors: ErrnoStatus
// (EINVAL for an invalid signal number, or SIGKILL/SIGSTOP).
Status SetSignalAction(int sig, const struct sigaction& action);

// ---- async-signal-safe -------------------------------------------------------
// Sets sig's disposition to SIG_DFL (no flags, empty mask). Cannot fail for
// a valid catchable signal; failure is ignored.
void SetDefaultSignalAction(int sig);
// raise(3): sends sig to the calling thread. A signal blocked in the thread
// (the one being handled, normally) is delivered once it is unblocked.
void RaiseSignal(int sig);
// One write(2) of `len` bytes from `buf` to `fd`: the byte count, or -1 with
// errno set. No retry on EINTR or on a short count (a message to stderr of
// less than PIPE_BUF bytes is written whole or not at all).
ssize_t SignalSafeWrite(int fd, const void* buf, size_t len);
// close(2); failure is ignored (a forked child closing its copy of a
// descriptor it does not use).
void SignalSafeClose(int fd);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_SIGNAL_HANDLER_H_
