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

}  // namespace pagewise::sys
