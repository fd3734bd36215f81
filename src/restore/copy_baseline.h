// TimeUffdCopyBaseline: the bare UFFDIO_COPY fill rate, as a same-run baseline
// for lazy-restore benchmarks ("how fast could any userfaultfd server
// install these bytes from memory?"). Not a restore: no faults, no events,
// no source reads; just the ioctl in batches into fresh registered memory.
//
// Thread safety: a plain function; each call uses its own mapping and fd.
#ifndef PAGEWISE_RESTORE_COPY_BASELINE_H_
#define PAGEWISE_RESTORE_COPY_BASELINE_H_

#include <cstddef>
#include <cstdint>

#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise {

struct UffdCopyTiming {
  uint64_t copy_ns = 0;  // time spent in the UFFDIO_COPY calls only
  uint64_t bytes = 0;
};

// Maps `len` bytes of fresh anonymous memory, registers it MISSING with a new
// userfaultfd, and UFFDIO_COPYs `src` into it `batch_pages` pages per call,
// timing only the copies. Unmaps everything before returning. `len` must be a
// multiple of the page size. Errors: userfaultfd unavailable (kNotSupported
// / kPermissionDenied), mapping failures, a copy that fails.
Result<UffdCopyTiming> TimeUffdCopyBaseline(const void* src, size_t len, size_t batch_pages,
                                            Env* env = nullptr);

}  // namespace pagewise

#endif  // PAGEWISE_RESTORE_COPY_BASELINE_H_
