// PinToCurrentCpu: sched_getaffinity, sched_getcpu, sched_setaffinity.
#include "sys/cpu_pin.h"

namespace pagewise::sys {

PinToCurrentCpu::PinToCurrentCpu() {
  CPU_ZERO(&saved_);
  if (sched_getaffinity(0, sizeof(saved_), &saved_) != 0) return;
  cpu_set_t one;
  CPU_ZERO(&one);
  const int cpu = sched_getcpu();
  CPU_SET(cpu < 0 ? 0 : cpu, &one);
  pinned_ = sched_setaffinity(0, sizeof(one), &one) == 0;
}

PinToCurrentCpu::~PinToCurrentCpu() {
  if (pinned_) sched_setaffinity(0, sizeof(saved_), &saved_);
}

}  // namespace pagewise::sys
