// Raw mprotect/madvise system calls (see raw_mm.h for why they exist).
#include "sys/raw_mm.h"

#include <sys/syscall.h>
#include <unistd.h>

namespace pagewise::sys {

int RawMprotect(void* addr, size_t len, int prot) {
  return static_cast<int>(syscall(SYS_mprotect, addr, len, prot));
}

int RawMadvise(void* addr, size_t len, int advice) {
  return static_cast<int>(syscall(SYS_madvise, addr, len, advice));
}

void* RawMremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr) {
  return reinterpret_cast<void*>(syscall(SYS_mremap, old_addr, old_len, new_len, flags, new_addr));
}

}  // namespace pagewise::sys
