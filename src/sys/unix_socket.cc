// Unix sockets: safe listen, removal if ours, peer credentials, recvmsg.
#include "sys/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pagewise::sys {
namespace {

Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("socket path must be 1 to " +
                                   std::to_string(sizeof(addr.sun_path) - 1) + " bytes: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// What is at `path` may be replaced: nothing, or a socket nobody listens on.
Result<bool> CheckPathFree(const std::string& path, const sockaddr_un& addr) {
  Result<FileIdentity> there = IdentifyPath(path, /*follow_symlinks=*/false);
  if (!there.ok()) {
    if (there.status().code() == Code::kNotFound) return false;
    return there.status().WithContext("checking socket path " + path);
  }
  if (!there->socket()) {
    return Status::AlreadyExists(path + " exists and is a " + there->TypeName() +
                                 ", not a socket: refusing to replace it; pass another "
                                 "--socket path or remove it yourself");
  }
  const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (probe < 0) return ErrnoStatus(errno, "socket(AF_UNIX)");
  const int rc = connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  close(probe);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
    return Status::AlreadyExists("a server is listening on " + path +
                                 " already: refusing to take over its socket; stop it or "
                                 "pass another --socket path");
  }
  if (err != ECONNREFUSED) {
    return ErrnoStatus(err, "probing the socket at " + path,
                       "only a stale socket (connection refused) is replaced");
  }
  return true;  // stale: nobody listens
}

}  // namespace

Result<ListeningSocket> ListenUnixSocket(const std::string& path, int backlog, mode_t mode) {
  PW_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  PW_ASSIGN_OR_RETURN(bool stale, CheckPathFree(path, addr));
  ListeningSocket out;
  out.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (out.fd < 0) return ErrnoStatus(errno, "socket(AF_UNIX)");
  auto fail = [&](int err, const std::string& what) {
    close(out.fd);
    return ErrnoStatus(err, what);
  };
  if (stale) {
    // Between the probe and here another server may have taken the path;
    // then bind fails with EADDRINUSE below instead of stealing it... unless
    // it is the stale file we unlink now, which only a racing server that
    // also saw it stale could have replaced.
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return fail(errno, "removing the stale socket " + path);
    }
    out.replaced_stale = true;
  }
  if (bind(out.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      close(out.fd);
      return Status::AlreadyExists(path +
                                   " appeared while binding (another server?); refusing "
                                   "to replace it");
    }
    return fail(err, "bind " + path);
  }
  // The mode is set before listen(): until then connect(2) is refused, so
  // nobody connects under the umask's wider mode.
  if (chmod(path.c_str(), mode) != 0) {
    const int err = errno;
    unlink(path.c_str());
    return fail(err, "chmod " + path);
  }
  Result<FileIdentity> id = IdentifyPath(path, /*follow_symlinks=*/false);
  if (!id.ok()) {
    close(out.fd);
    return id.status();
  }
  out.file = *id;
  if (listen(out.fd, backlog) != 0) {
    const int err = errno;
    RemoveIfOurs(path, out.file);
    return fail(err, "listen " + path);
  }
  return out;
}

bool RemoveIfOurs(const std::string& path, const FileIdentity& bound) {
  Result<FileIdentity> now = IdentifyPath(path, /*follow_symlinks=*/false);
  if (!now.ok() || !now->socket() || !now->SameFile(bound)) return false;
  return unlink(path.c_str()) == 0;
}

Result<PeerCredentials> GetPeerCredentials(int sock) {
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus(errno, "getsockopt(SO_PEERCRED)");
  }
  PeerCredentials out;
  out.pid = cred.pid;
  out.uid = cred.uid;
  out.gid = cred.gid;
#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      out.groups = std::move(groups);
      break;
    }
    if (errno != ERANGE) break;  // ENOPROTOOPT before Linux 4.13: primary gid only
    groups.resize(glen / sizeof(gid_t) + 1);
  }
  return out;
}

Result<ReceivedMessage> ReceiveMessage(int sock, void* buf, size_t len) {
  ReceivedMessage out;
  struct iovec iov = {buf, len};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxReceivedFds)] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "recvmsg");
  out.bytes = static_cast<size_t>(n);
  out.truncated = (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < nfds; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        out.fds.push_back(fd);
      }
    } else {
      out.other_control = true;  // e.g. SCM_CREDENTIALS: not part of the handshake
    }
  }
  return out;
}

void CloseAll(std::vector<int>* fds) {
  for (int fd : *fds) close(fd);
  fds->clear();
}

}  // namespace pagewise::sys
