// Memory calls made the way a program that knows nothing of pagewise makes
// them: through libc's mprotect(2) and madvise(2) symbols, so that
// libpagewise-interpose (when linked or preloaded) sees them as it sees the
// program's own calls. Env::Mprotect/Madvise and raw_mm.h are the opposite:
// they bypass the interposers, because pagewise's own calls must not be
// taken for the program's.
//
// For the never-lose-a-write check's scenario disturbers
// (src/track/check_scenarios.cc), which model such a program changing
// tracked memory under a tracker.
//
// Thread safety: stateless; safe from any thread. Whatever an interposer
// does (the mprotect backend takes its tracker's lock) happens inside.
#ifndef PAGEWISE_SYS_PROGRAM_MM_H_
#define PAGEWISE_SYS_PROGRAM_MM_H_

#include <cstddef>

#include "pagewise/status.h"

namespace pagewise::sys {

// libc's mprotect(addr, len, prot). Errors: ErrnoStatus (ENOMEM: part of
// the range is not mapped; EINVAL: addr not page aligned, or a bad prot).
Status ProgramMprotect(void* addr, size_t len, int prot);
// libc's madvise(addr, len, advice). Errors: ErrnoStatus (ENOMEM: part of
// the range is not mapped; EINVAL: bad alignment or advice).
Status ProgramMadvise(void* addr, size_t len, int advice);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_PROGRAM_MM_H_
