// mkdir, directory listings, futimens and OFD locks (see fs.h).
#include "sys/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace pagewise::sys {

Status MakeDirs(const std::string& path, uint32_t mode) {
  if (path.empty()) return Status::InvalidArgument("MakeDirs: empty path");
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    const std::string part = path.substr(0, pos);
    if (mkdir(part.c_str(), mode) == 0 || errno == EEXIST) continue;
    return ErrnoStatus(errno, "mkdir " + part);
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + " exists and is not a directory");
  return Status::Ok();
}

Result<std::vector<DirEntry>> ListDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "opendir " + dir);
  std::vector<DirEntry> out;
  const int dfd = dirfd(d);
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // vanished
    DirEntry de;
    de.name = name;
    de.size = static_cast<uint64_t>(st.st_size);
    de.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    de.regular = S_ISREG(st.st_mode);
    out.push_back(std::move(de));
  }
  closedir(d);
  return out;
}

Result<FileInfo> StatFd(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat");
  FileInfo f;
  f.size = static_cast<uint64_t>(st.st_size);
  f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  f.regular = S_ISREG(st.st_mode);
  return f;
}

Status TouchFd(int fd) {
  if (futimens(fd, nullptr) != 0) return ErrnoStatus(errno, "futimens");
  return Status::Ok();
}

Result<bool> TryLockRange(int fd, uint64_t offset, uint64_t len) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(offset);
  fl.l_len = static_cast<off_t>(len);
  if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return true;
  if (errno == EAGAIN || errno == EACCES) return false;
  return ErrnoStatus(errno, "fcntl F_OFD_SETLK");
}

Status UnlockRange(int fd, uint64_t offset, uint64_t len) {
  struct flock fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(offset);
  fl.l_len = static_cast<off_t>(len);
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0) return ErrnoStatus(errno, "fcntl F_OFD_SETLK unlock");
  return Status::Ok();
}

}  // namespace pagewise::sys
