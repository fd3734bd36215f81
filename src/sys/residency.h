// Page residency: which pages of a mapping are in memory (mincore(2)), for
// tests and diagnostics that check what a restore or a drop populated.
//
// Thread safety: stateless; safe from any thread. The answer is a snapshot:
// pages may be faulted in or reclaimed right after.
#ifndef PAGEWISE_SYS_RESIDENCY_H_
#define PAGEWISE_SYS_RESIDENCY_H_

#include <cstddef>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::sys {

// mincore(2) of [addr, addr + len): one entry per page (len rounded up to
// whole pages), true where the page is resident. addr must be page
// aligned. Errors: ErrnoStatus (ENOMEM: part of the range is not mapped;
// EINVAL: addr not aligned).
Result<std::vector<bool>> ResidentPages(const void* addr, size_t len);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_RESIDENCY_H_
