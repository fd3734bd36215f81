// Memory calls through libc's symbols (see program_mm.h). Deliberately not
// sys::RawMprotect/RawMadvise: those bypass the interposers.
#include "sys/program_mm.h"

#include <sys/mman.h>

#include <cerrno>
#include <string>

namespace pagewise::sys {

Status ProgramMprotect(void* addr, size_t len, int prot) {
  if (mprotect(addr, len, prot) != 0) {
    const int err = errno;  // before the message allocates
    return ErrnoStatus(err, "mprotect prot=" + std::to_string(prot));
  }
  return Status::Ok();
}

Status ProgramMadvise(void* addr, size_t len, int advice) {
  if (madvise(addr, len, advice) != 0) {
    const int err = errno;  // before the message allocates
    return ErrnoStatus(err, "madvise advice=" + std::to_string(advice));
  }
  return Status::Ok();
}

}  // namespace pagewise::sys
