// Raw memory-management system calls that bypass libc's wrappers.
//
// libpagewise-interpose (src/sys/interpose/) defines libc's mprotect(2),
// madvise(2) and mremap(2) so that tracking backends learn about protection
// changes, moves and dropped pages. The interposers, Env's Mprotect/Madvise
// and the mprotect backend's signal handler reach the kernel through these
// functions, which call syscall() directly and therefore never recurse into
// the interposers.
//
// They are inline so that libpagewise and libpagewise-interpose each carry
// their own copy and link together in any combination (static or shared,
// either order) without a duplicate or a missing symbol.
//
// Thread safety: stateless and async-signal-safe (a single syscall each).
#ifndef PAGEWISE_SYS_RAW_MM_H_
#define PAGEWISE_SYS_RAW_MM_H_

#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>

namespace pagewise::sys {

// Same contract as the libc functions: 0 on success, -1 with errno set.
inline int RawMprotect(void* addr, size_t len, int prot) {
  return static_cast<int>(syscall(SYS_mprotect, addr, len, prot));
}

inline int RawMadvise(void* addr, size_t len, int advice) {
  return static_cast<int>(syscall(SYS_madvise, addr, len, advice));
}

// MAP_FAILED with errno set on failure. new_addr is used with MREMAP_FIXED.
inline void* RawMremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr) {
  return reinterpret_cast<void*>(syscall(SYS_mremap, old_addr, old_len, new_len, flags, new_addr));
}

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_RAW_MM_H_
