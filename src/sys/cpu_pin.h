// PinToCurrentCpu: keeps the calling thread (and the threads it starts
// meanwhile, which inherit its mask) on the CPU it is running on, for
// measurements that must not migrate between CPUs (sched_getaffinity /
// sched_setaffinity / sched_getcpu).
//
// Thread safety: an object belongs to the thread that made it; construct
// and destroy it on that thread (the mask is per thread).
#ifndef PAGEWISE_SYS_CPU_PIN_H_
#define PAGEWISE_SYS_CPU_PIN_H_

#include <sched.h>

namespace pagewise::sys {

class PinToCurrentCpu {
 public:
  // Best effort: if the mask cannot be read or set (a seccomp filter, a
  // cpuset that forbids it), nothing is pinned and pinned() is false.
  PinToCurrentCpu();
  // Restores the mask the thread had before (if it was pinned).
  ~PinToCurrentCpu();
  PinToCurrentCpu(const PinToCurrentCpu&) = delete;
  PinToCurrentCpu& operator=(const PinToCurrentCpu&) = delete;

  bool pinned() const { return pinned_; }

 private:
  cpu_set_t saved_;
  bool pinned_ = false;
};

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_CPU_PIN_H_
