// Unix SOCK_SEQPACKET sockets (message boundaries kept, descriptors passed
// with SCM_RIGHTS per message) for private control channels between
// processes of the same user, such as serve handover.
//
// Thread safety: stateless.
#ifndef PAGEWISE_SYS_UNIX_SEQPACKET_H_
#define PAGEWISE_SYS_UNIX_SEQPACKET_H_

#include <sys/types.h>

#include <string>

#include "pagewise/status.h"

namespace pagewise::sys {

// Listens on `path` (a socket file there is replaced; any other kind of
// file is refused, kAlreadyExists), then makes the socket file mode 0600.
// Close-on-exec, non-blocking.
Result<int> ListenSeqpacket(const std::string& path, int backlog);
// Accepts one connection (close-on-exec, blocking). kRetry if none waits.
Result<int> AcceptSeqpacket(int listen_fd);
// Connects to `path` (close-on-exec, blocking).
Result<int> ConnectSeqpacket(const std::string& path);
// The peer's user id (SO_PEERCRED).
Result<uid_t> PeerUid(int sock);
// This process's effective user id.
uid_t EffectiveUid();

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_UNIX_SEQPACKET_H_
