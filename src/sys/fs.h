// File-system calls that Env does not have, for the chunk cache
// (src/remote/disk_cache.cc): directories, listings with sizes and times,
// modification-time updates, and open-file-description byte-range locks
// (F_OFD_SETLK: held per open file, released when it is closed or the
// process dies, and they never block here).
//
// Thread safety: stateless; safe from any thread.
#ifndef PAGEWISE_SYS_FS_H_
#define PAGEWISE_SYS_FS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::sys {

// mkdir -p with `mode` for the directories it creates. OK if it exists.
Status MakeDirs(const std::string& path, uint32_t mode);

struct DirEntry {
  std::string name;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  bool regular = false;
};
// The entries of `dir` except "." and "..", with lstat data (an entry that
// vanishes meanwhile is left out). kNotFound if `dir` does not exist.
Result<std::vector<DirEntry>> ListDir(const std::string& dir);

struct FileInfo {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  bool regular = false;
};
Result<FileInfo> StatFd(int fd);

// Sets the modification time of the open file to now.
Status TouchFd(int fd);

// Tries to take a write lock on bytes [offset, offset+len) of `fd` without
// waiting. true: taken; false: someone else (another open file
// description: another process or another open()) holds a conflicting lock.
Result<bool> TryLockRange(int fd, uint64_t offset, uint64_t len);
Status UnlockRange(int fd, uint64_t offset, uint64_t len);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_FS_H_
