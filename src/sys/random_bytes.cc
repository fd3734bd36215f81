// RandomBytes: getrandom(2) with EINTR and short-read retries.
#include "sys/random_bytes.h"

#include <sys/random.h>

#include <cerrno>

namespace pagewise::sys {

Status RandomBytes(void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t done = 0;
  while (done < len) {
    const ssize_t n = getrandom(p + done, len - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "getrandom", "pagewise needs Linux 3.17 or newer");
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<uint64_t> RandomU64() {
  uint64_t v = 0;
  PW_RETURN_IF_ERROR(RandomBytes(&v, sizeof(v)));
  return v;
}

}  // namespace pagewise::sys
