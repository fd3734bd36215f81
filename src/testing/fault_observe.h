// Observing faults from tests: whether reading a page raises SIGBUS (a
// poisoned page), and whether a thread sleeps waiting for a userfaultfd
// monitor. (restore/restore_testing.h re-exports these.)
//
// Thread safety: ReadPageOrSigbus may be called from any thread (it
// installs a process-wide SIGBUS handler that jumps back only on threads
// inside it); ThreadBlockedInUffd is stateless.
#ifndef PAGEWISE_TESTING_FAULT_OBSERVE_H_
#define PAGEWISE_TESTING_FAULT_OBSERVE_H_

#include <sys/types.h>

#include <cstddef>

namespace pagewise::testing {

// Copies one page (page_size bytes) from `p` into `out` with plain loads;
// returns true if the access raised SIGBUS instead.
bool ReadPageOrSigbus(const char* p, char* out, size_t page_size);

// True if thread `tid` of this process sleeps in handle_userfault.
bool ThreadBlockedInUffd(pid_t tid);

}  // namespace pagewise::testing

#endif  // PAGEWISE_TESTING_FAULT_OBSERVE_H_
