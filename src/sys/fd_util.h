// Small descriptor operations the restore engine needs on its own threads:
// non-blocking mode, moving a descriptor into a range of numbers, a private
// descriptor table, the descriptor limit, and eventfd wake-ups.
//
// Thread safety: stateless; each call is one or two system calls.
#ifndef PAGEWISE_SYS_FD_UTIL_H_
#define PAGEWISE_SYS_FD_UTIL_H_

#include <cstdint>

#include "pagewise/status.h"

namespace pagewise::sys {

// Sets O_NONBLOCK on the open file if it is not set (best effort).
void EnsureNonblocking(int fd);
// Moves `fd` to the lowest free number >= base (close-on-exec) and frees
// the old number with close_range(2) (so that descriptor-tracking tools do
// not see a close); returns the new number, or `fd` if there is no room.
int MoveFdAtOrAbove(int fd, int base);
// unshare(CLONE_FILES): the calling thread gets its own copy of the
// descriptor table (threads it starts afterwards share that copy).
Status UnshareFdTable();
// RLIMIT_NOFILE's soft limit (0 if unlimited or unknown).
uint64_t FdLimit();
// Adds 1 to an eventfd's counter / resets it (both best effort: a wake-up
// lost to an error is followed by the next one).
void SignalEventfd(int fd);
void DrainEventfd(int fd);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_FD_UTIL_H_
