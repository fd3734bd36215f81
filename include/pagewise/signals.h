// Signals for long-running programs built on pagewise (pagewise serve):
// ignore SIGPIPE, and take SIGINT/SIGTERM synchronously.
//
// A server writes to sockets and pipes whose other end may be gone (a
// client, a log reader); with SIGPIPE ignored such a write fails with
// EPIPE instead of killing the process. StopSignals blocks SIGINT and
// SIGTERM in the calling thread, so that threads started afterwards
// inherit the mask and Wait() receives them (sigwait); RequestStop() sends
// SIGTERM to the process, waking Wait() from any thread.
//
// Thread safety: IgnoreSigpipe and RequestStop from any thread; Block()
// before the program starts threads; Wait() from the thread that blocked.
#ifndef PAGEWISE_SIGNALS_H_
#define PAGEWISE_SIGNALS_H_

#include "pagewise/export.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// SIGPIPE's disposition becomes SIG_IGN for the whole process.
void IgnoreSigpipe();

class StopSignals {
 public:
  // Blocks SIGINT and SIGTERM in the calling thread.
  static StopSignals Block();
  // Waits for SIGINT or SIGTERM; returns which.
  int Wait() const;

 private:
  StopSignals() = default;
};

// Sends SIGTERM to this process.
void RequestStop();

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_SIGNALS_H_
