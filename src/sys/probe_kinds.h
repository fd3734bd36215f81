// The memory-kind part of the kernel probe (pagewise/probe.h): which
// userfaultfd modes work on hugetlbfs and shmem, UFFDIO_MOVE, THP for
// shmem, and the hugetlbfs pools. Called once by ProbeKernel.
//
// Thread safety: ProbeMemoryKinds fills the caller's KernelFeatures only.
#ifndef PAGEWISE_SYS_PROBE_KINDS_H_
#define PAGEWISE_SYS_PROBE_KINDS_H_

#include "pagewise/probe.h"
#include "sys/env.h"

namespace pagewise::sys {

// Registers a scratch mapping of each kind in each mode (through `env`)
// and records the answers in f->memory_kinds; reads the pools and the THP
// shmem setting. Never fails: what does not work is recorded with a reason.
// Requires f->uffd_* to be probed already.
void ProbeMemoryKinds(Env* env, KernelFeatures* f);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_PROBE_KINDS_H_
