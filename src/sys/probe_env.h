// The kernel probe through a chosen Env (internal; pagewise/probe.h is the
// public side). Tests pass a FaultEnv to see how the probe records missing
// features.
//
// Thread safety: as ProbeKernel().
#ifndef PAGEWISE_SYS_PROBE_ENV_H_
#define PAGEWISE_SYS_PROBE_ENV_H_

#include "pagewise/probe.h"
#include "sys/env.h"

namespace pagewise {

// ProbeKernel() through `env` (not null). Never fails.
KernelFeatures ProbeKernel(Env* env);

}  // namespace pagewise

#endif  // PAGEWISE_SYS_PROBE_ENV_H_
