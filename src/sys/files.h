// File facts from the kernel: identity (device, inode, type) of a path or
// descriptor, symbolic link targets, and the data/hole layout of sparse
// files. Used to refuse writing an output onto an input (same inode, by
// any name), to refuse non-regular files, and to import sparse files.
//
// Thread safety: stateless; safe from any thread.
#ifndef PAGEWISE_SYS_FILES_H_
#define PAGEWISE_SYS_FILES_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "pagewise/status.h"

namespace pagewise::sys {

struct FileIdentity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint32_t mode = 0;  // st_mode (type and permission bits)
  uint32_t uid = 0;
  uint64_t size = 0;

  bool SameFile(const FileIdentity& o) const { return dev == o.dev && ino == o.ino; }
  bool regular() const;
  bool directory() const;
  bool symlink() const;
  bool socket() const;
  // "regular file", "directory", "symbolic link", "socket", "FIFO",
  // "character device", "block device".
  const char* TypeName() const;
  // "dev:ino" (for messages).
  std::string Text() const;
};

// stat(2) (follow_symlinks) or lstat(2) of `path`. kNotFound when nothing
// is there (or a link's target is missing), other errors as ErrnoStatus.
Result<FileIdentity> IdentifyPath(const std::string& path, bool follow_symlinks);
// fstat(2) of an open descriptor.
Result<FileIdentity> IdentifyFd(int fd);

// readlink(2): the target of the symbolic link `path` (or of a magic link
// such as /proc/self/fd/N: "pipe:[123]", "anon_inode:[userfaultfd]").
Result<std::string> ReadLink(const std::string& path);

// The current working directory (getcwd).
Result<std::string> CurrentDirectory();

// lseek(SEEK_DATA) / lseek(SEEK_HOLE) from `from`: the offset of the next
// data / hole at or after it. At or past the end of the file (ENXIO) both
// return `size`. File systems without hole support report all data.
Result<uint64_t> NextData(int fd, uint64_t from, uint64_t size);
Result<uint64_t> NextHole(int fd, uint64_t from, uint64_t size);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_FILES_H_
