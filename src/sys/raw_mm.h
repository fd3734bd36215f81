// Raw memory-management system calls that bypass libc's wrappers.
//
// pagewise interposes libc's mprotect(2), madvise(2) and mremap(2) (see
// src/track/memory_events.h) so that tracking backends learn about protection
// changes, moves and dropped pages. The interposers, and Env's Mprotect/Madvise,
// reach the kernel through these functions, which call syscall() directly and
// therefore never recurse into the interposers.
//
// Thread safety: stateless and async-signal-safe (a single syscall each).
#ifndef PAGEWISE_SYS_RAW_MM_H_
#define PAGEWISE_SYS_RAW_MM_H_

#include <cstddef>

namespace pagewise::sys {

// Same contract as the libc functions: 0 on success, -1 with errno set.
int RawMprotect(void* addr, size_t len, int prot);
int RawMadvise(void* addr, size_t len, int advice);
// MAP_FAILED with errno set on failure. new_addr is used with MREMAP_FIXED.
void* RawMremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_RAW_MM_H_
