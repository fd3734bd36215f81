// fcntl, close_range, unshare, getrlimit and eventfd wrappers.
#include "sys/fd_util.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

namespace pagewise::sys {

void EnsureNonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int MoveFdAtOrAbove(int fd, int base) {
  const int moved = fcntl(fd, F_DUPFD_CLOEXEC, base);
  if (moved < 0) return fd;
  close_range(static_cast<unsigned>(fd), static_cast<unsigned>(fd), 0);
  return moved;
}

Status UnshareFdTable() {
  if (unshare(CLONE_FILES) != 0) return ErrnoStatus(errno, "unshare(CLONE_FILES)");
  return Status::Ok();
}

uint64_t FdLimit() {
  struct rlimit rl = {};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 0;
  return rl.rlim_cur;
}

void SignalEventfd(int fd) { eventfd_write(fd, 1); }

void DrainEventfd(int fd) {
  eventfd_t v;
  eventfd_read(fd, &v);
}

}  // namespace pagewise::sys
