// Wake-up counters on eventfds: the two calls a thread makes to wake a poll
// loop and to consume that wake-up (the descriptor comes from
// Env::EventfdCreate).
//
// Thread safety: both are safe from any thread on any eventfd; the kernel
// serialises the counter.
#ifndef PAGEWISE_SYS_WAKE_EVENTFD_H_
#define PAGEWISE_SYS_WAKE_EVENTFD_H_

#include <sys/eventfd.h>

namespace pagewise::sys {

// Adds one to eventfd `fd`'s counter, waking its pollers. Cannot fail for a
// valid eventfd far from its counter's limit, so errors are ignored.
inline void EventfdSignal(int fd) { (void)eventfd_write(fd, 1); }

// Resets eventfd `fd`'s counter (one wake-up consumed, however many were
// signalled). EAGAIN on a non-blocking eventfd means another reader took
// it: the same outcome, so errors are ignored.
inline void EventfdDrain(int fd) {
  eventfd_t v;
  (void)eventfd_read(fd, &v);
}

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_WAKE_EVENTFD_H_
