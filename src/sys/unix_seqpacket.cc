// SOCK_SEQPACKET listen/accept/connect and peer credentials.
#include "sys/unix_seqpacket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sys/files.h"

namespace pagewise::sys {
namespace {

Result<sockaddr_un> Address(const std::string& path) {
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("socket path too long (max " +
                                   std::to_string(sizeof(addr.sun_path) - 1) + "): " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

Result<int> ListenSeqpacket(const std::string& path, int backlog) {
  PW_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket(AF_UNIX, SOCK_SEQPACKET)");
  // A socket file there (stale, or a predecessor's during a handover) is
  // replaced; anything else (a regular file, a directory, a symbolic link)
  // is refused: never destroy a file we did not make.
  Result<FileIdentity> there = IdentifyPath(path, /*follow_symlinks=*/false);
  if (there.ok() && !there->socket()) {
    close(fd);
    return Status::AlreadyExists(path + " exists and is a " + there->TypeName() +
                                 ", not a socket: refusing to replace it");
  }
  if (!there.ok() && there.status().code() != Code::kNotFound) {
    close(fd);
    return there.status().WithContext("checking socket path " + path);
  }
  unlink(path.c_str());  // a socket file from an earlier run
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      chmod(path.c_str(), 0600) != 0 || listen(fd, backlog) != 0) {
    const int err = errno;
    close(fd);
    unlink(path.c_str());
    return ErrnoStatus(err, "bind/listen " + path);
  }
  return fd;
}

Result<int> AcceptSeqpacket(int listen_fd) {
  int fd;
  do {
    fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && (errno == EAGAIN || errno == ECONNABORTED)) {
    return Status(Code::kRetry, errno, "no connection to accept");
  }
  if (fd < 0) return ErrnoStatus(errno, "accept");
  return fd;
}

Result<int> ConnectSeqpacket(const std::string& path) {
  PW_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket(AF_UNIX, SOCK_SEQPACKET)");
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, "connect " + path);
  }
  return fd;
}

Result<uid_t> PeerUid(int sock) {
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus(errno, "getsockopt(SO_PEERCRED)");
  }
  return cred.uid;
}

uid_t EffectiveUid() { return geteuid(); }

}  // namespace pagewise::sys
