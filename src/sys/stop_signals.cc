// IgnoreSigpipe, StopSignals, RequestStop (pagewise/signals.h).
#include <signal.h>
#include <unistd.h>

#include "pagewise/signals.h"

namespace pagewise {
namespace {
sigset_t StopSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void IgnoreSigpipe() {
  struct sigaction sa = {};
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, nullptr);
}

StopSignals StopSignals::Block() {
  const sigset_t set = StopSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return StopSignals();
}

int StopSignals::Wait() const {
  const sigset_t set = StopSet();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

void RequestStop() { kill(getpid(), SIGTERM); }

}  // namespace pagewise
