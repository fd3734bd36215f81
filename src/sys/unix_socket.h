// Unix stream sockets for a page server: listening without clobbering
// anything at the path, peer credentials, and messages with descriptors.
//
// ListenUnixSocket only ever replaces a stale socket (a socket file nobody
// listens on: connect(2) is refused). A live socket (another server), or
// any other kind of file (a regular file, perhaps the memory file being
// served; a directory; a symbolic link) is refused with an error naming
// the path. The socket file gets its mode before the socket listens, so
// no connection is possible under a wider mode. RemoveIfOurs removes the
// file at exit only if it is still the one we bound (same device and
// inode): a successor's socket, or anything put there meanwhile, stays.
//
// Thread safety: stateless; safe from any thread.
#ifndef PAGEWISE_SYS_UNIX_SOCKET_H_
#define PAGEWISE_SYS_UNIX_SOCKET_H_

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include "pagewise/status.h"
#include "sys/files.h"

namespace pagewise::sys {

struct ListeningSocket {
  int fd = -1;        // owned by the caller
  FileIdentity file;  // the socket file as bound
  bool replaced_stale = false;
};

// Binds a SOCK_STREAM|SOCK_CLOEXEC Unix socket at `path`, chmods the file
// to `mode`, then listens. Errors: kAlreadyExists for a live socket or a
// file of another kind at `path`; kInvalidArgument for a path too long;
// others from the system calls, naming the path.
Result<ListeningSocket> ListenUnixSocket(const std::string& path, int backlog, mode_t mode);

// Unlinks `path` if it is still `bound` (device and inode); returns whether
// it did.
bool RemoveIfOurs(const std::string& path, const FileIdentity& bound);

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (SO_PEERGROUPS), if known
};

// SO_PEERCRED (and SO_PEERGROUPS, Linux 4.13+) of a connected Unix socket:
// the credentials the peer had when it connected.
Result<PeerCredentials> GetPeerCredentials(int sock);

struct ReceivedMessage {
  size_t bytes = 0;            // 0: end of stream
  std::vector<int> fds;        // SCM_RIGHTS descriptors received (owned by the caller)
  bool truncated = false;      // MSG_CTRUNC: more descriptors were sent than fit (the
                               // kernel closed those); or the data was cut (MSG_TRUNC)
  bool other_control = false;  // a control message other than SCM_RIGHTS
};

// One recvmsg(2) of up to `len` bytes with room for kMaxReceivedFds
// descriptors (MSG_CMSG_CLOEXEC). Every descriptor received is returned,
// so the caller decides, and closes what it does not keep.
inline constexpr size_t kMaxReceivedFds = 16;
Result<ReceivedMessage> ReceiveMessage(int sock, void* buf, size_t len);

// Closes every descriptor in fds and clears it.
void CloseAll(std::vector<int>* fds);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_UNIX_SOCKET_H_
