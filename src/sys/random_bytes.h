// Random bytes from the kernel (getrandom(2)), for names nobody can guess
// (temporary files) and identities (image UUIDs).
//
// Thread safety: stateless; safe from any thread.
#ifndef PAGEWISE_SYS_RANDOM_BYTES_H_
#define PAGEWISE_SYS_RANDOM_BYTES_H_

#include <cstddef>
#include <cstdint>

#include "pagewise/status.h"

namespace pagewise::sys {

// Fills `len` bytes at `buf` from the kernel's CSPRNG (getrandom, flags 0:
// blocks only before the pool is first initialised at boot). EINTR and
// short reads are retried. Errors: ENOSYS (kernel older than 3.17:
// kNotSupported), anything else as ErrnoStatus.
Status RandomBytes(void* buf, size_t len);

// 64 random bits (RandomBytes).
Result<uint64_t> RandomU64();

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_RANDOM_BYTES_H_
