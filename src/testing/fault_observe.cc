// ReadPageOrSigbus and ThreadBlockedInUffd.
#include "testing/fault_observe.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace pagewise::testing {
namespace {

thread_local sigjmp_buf* t_sigbus_jmp = nullptr;

void OnSigbus(int sig) {
  if (t_sigbus_jmp != nullptr) siglongjmp(*t_sigbus_jmp, 1);
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

bool ReadPageOrSigbus(const char* p, char* out, size_t page_size) {
  struct sigaction sa = {};
  sa.sa_handler = OnSigbus;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  sigjmp_buf jb;
  t_sigbus_jmp = &jb;
  bool bus = false;
  if (sigsetjmp(jb, 1) == 0) {
    const volatile char* src = p;
    for (size_t i = 0; i < page_size; ++i) out[i] = src[i];
  } else {
    bus = true;
  }
  t_sigbus_jmp = nullptr;
  return bus;
}

bool ThreadBlockedInUffd(pid_t tid) {
  const std::string path = "/proc/self/task/" + std::to_string(tid) + "/wchan";
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[64] = {};
  const ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  return n > 0 && std::strcmp(buf, "handle_userfault") == 0;
}

}  // namespace pagewise::testing
