// Signal dispositions and async-signal-safe calls (see signal_handler.h).
#include "sys/signal_handler.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace pagewise::sys {
namespace {

// "SIGSEGV" (or the number, for a signal without a name).
std::string SignalName(int sig) {
  const char* name = sigabbrev_np(sig);
  return name != nullptr ? std::string("SIG") + name : std::to_string(sig);
}

}  // namespace

Status GetSignalAction(int sig, struct sigaction* current) {
  if (sigaction(sig, nullptr, current) != 0) {
    const int err = errno;
    return ErrnoStatus(err, "sigaction(" + SignalName(sig) + ") query");
  }
  return Status::Ok();
}

Status SetSignalAction(int sig, const struct sigaction& action) {
  if (sigaction(sig, &action, nullptr) != 0) {
    const int err = errno;
    return ErrnoStatus(err, "sigaction(" + SignalName(sig) + ")");
  }
  return Status::Ok();
}

void SetDefaultSignalAction(int sig) {
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  (void)sigaction(sig, &dfl, nullptr);
}

void RaiseSignal(int sig) { (void)raise(sig); }

ssize_t SignalSafeWrite(int fd, const void* buf, size_t len) { return write(fd, buf, len); }

void SignalSafeClose(int fd) { (void)close(fd); }

}  // namespace pagewise::sys
