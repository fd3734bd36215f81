// File facts: stat/lstat/fstat, readlink, getcwd, SEEK_DATA/SEEK_HOLE.
#include "sys/files.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace pagewise::sys {
namespace {

FileIdentity FromStat(const struct stat& st) {
  FileIdentity id;
  id.dev = static_cast<uint64_t>(st.st_dev);
  id.ino = static_cast<uint64_t>(st.st_ino);
  id.mode = static_cast<uint32_t>(st.st_mode);
  id.uid = static_cast<uint32_t>(st.st_uid);
  id.size = st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return id;
}

Result<uint64_t> Seek(int fd, uint64_t from, uint64_t size, int whence, const char* name) {
  if (from >= size) return size;
  const off_t at = lseek(fd, static_cast<off_t>(from), whence);
  if (at < 0) {
    if (errno == ENXIO) return size;  // no data (or hole) at or after `from`
    return ErrnoStatus(errno, std::string("lseek ") + name + " from " + std::to_string(from));
  }
  return static_cast<uint64_t>(at) < size ? static_cast<uint64_t>(at) : size;
}

}  // namespace

bool FileIdentity::regular() const { return S_ISREG(mode); }
bool FileIdentity::directory() const { return S_ISDIR(mode); }
bool FileIdentity::symlink() const { return S_ISLNK(mode); }
bool FileIdentity::socket() const { return S_ISSOCK(mode); }

const char* FileIdentity::TypeName() const {
  if (S_ISREG(mode)) return "regular file";
  if (S_ISDIR(mode)) return "directory";
  if (S_ISLNK(mode)) return "symbolic link";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISFIFO(mode)) return "FIFO";
  if (S_ISCHR(mode)) return "character device";
  if (S_ISBLK(mode)) return "block device";
  return "special file";
}

std::string FileIdentity::Text() const { return std::to_string(dev) + ":" + std::to_string(ino); }

Result<FileIdentity> IdentifyPath(const std::string& path, bool follow_symlinks) {
  struct stat st;
  const int rc = follow_symlinks ? stat(path.c_str(), &st) : lstat(path.c_str(), &st);
  if (rc != 0) return ErrnoStatus(errno, std::string(follow_symlinks ? "stat " : "lstat ") + path);
  return FromStat(st);
}

Result<FileIdentity> IdentifyFd(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat fd " + std::to_string(fd));
  return FromStat(st);
}

Result<std::string> ReadLink(const std::string& path) {
  std::vector<char> buf(256);
  for (;;) {
    const ssize_t n = readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) return ErrnoStatus(errno, "readlink " + path);
    if (static_cast<size_t>(n) < buf.size()) return std::string(buf.data(), static_cast<size_t>(n));
    if (buf.size() >= PATH_MAX) return Status::InvalidArgument("readlink " + path + ": too long");
    buf.resize(buf.size() * 2);
  }
}

Result<std::string> CurrentDirectory() {
  std::vector<char> buf(PATH_MAX);
  if (getcwd(buf.data(), buf.size()) == nullptr) return ErrnoStatus(errno, "getcwd");
  return std::string(buf.data());
}

Result<uint64_t> NextData(int fd, uint64_t from, uint64_t size) {
  return Seek(fd, from, size, SEEK_DATA, "SEEK_DATA");
}

Result<uint64_t> NextHole(int fd, uint64_t from, uint64_t size) {
  return Seek(fd, from, size, SEEK_HOLE, "SEEK_HOLE");
}

}  // namespace pagewise::sys
