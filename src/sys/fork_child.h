// RunInForkedChild: fork(2), run a function in the child, wait for it.
//
// For baselines that measure what a fork-based reset costs (a snapshot
// fuzzer's classic "fork, run, exit" loop): the child runs `body` and leaves
// with _exit(body()), so no destructor, atexit handler or stdio flush of the
// parent's state runs twice. The parent waits for the child (EINTR retried).
//
// Thread safety: safe from any thread, but the child holds only the calling
// thread: `body` must not take locks other threads of the parent may hold
// (malloc is fine with glibc; the parent's mutexes are not).
#ifndef PAGEWISE_SYS_FORK_CHILD_H_
#define PAGEWISE_SYS_FORK_CHILD_H_

#include <functional>

#include "pagewise/status.h"

namespace pagewise::sys {

// Forks; the child calls body() and exits with its return value (0..255).
// Returns the child's exit code. Errors: fork or waitpid failure (with
// errno), kInternal if the child was killed by a signal.
Result<int> RunInForkedChild(const std::function<int()>& body);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_FORK_CHILD_H_
