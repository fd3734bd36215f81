// Page residency through mincore(2) (see residency.h).
#include "sys/residency.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "pagewise/region.h"

namespace pagewise::sys {

Result<std::vector<bool>> ResidentPages(const void* addr, size_t len) {
  const size_t pg = PageSize();
  std::vector<unsigned char> vec((len + pg - 1) / pg);
  if (mincore(const_cast<void*>(addr), len, vec.data()) != 0) {
    const int err = errno;  // before the message allocates
    return ErrnoStatus(err, "mincore len=" + std::to_string(len));
  }
  std::vector<bool> out(vec.size());
  for (size_t i = 0; i < vec.size(); ++i) out[i] = (vec[i] & 1) != 0;
  return out;
}

}  // namespace pagewise::sys
