// WriteFully / ReadFully: loops over Env::Pwrite / Env::Pread.
#include <string>

#include "sys/env.h"

namespace pagewise {

Status WriteFully(Env* env, int fd, const void* buf, size_t len, off_t offset) {
  const char* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < len) {
    PW_ASSIGN_OR_RETURN(size_t n, env->Pwrite(fd, p + done, len - done, offset + done));
    if (n == 0) {
      // pwrite returning 0 for a non-empty buffer means no progress is possible.
      return Status(Code::kNoSpace, 0,
                    "pwrite made no progress at offset " + std::to_string(offset + done));
    }
    done += n;
  }
  return Status::Ok();
}

Status ReadFully(Env* env, int fd, void* buf, size_t len, off_t offset) {
  char* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < len) {
    PW_ASSIGN_OR_RETURN(size_t n, env->Pread(fd, p + done, len - done, offset + done));
    if (n == 0) {
      return Status::Corruption("file truncated: wanted " + std::to_string(len) +
                                " bytes at offset " + std::to_string(offset) + ", got " +
                                std::to_string(done));
    }
    done += n;
  }
  return Status::Ok();
}

}  // namespace pagewise
