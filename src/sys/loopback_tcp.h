// Listening on a TCP port of this host's loopback interface (for local
// endpoints such as `pagewise serve --metrics`).
//
// Thread safety: stateless.
#ifndef PAGEWISE_SYS_LOOPBACK_TCP_H_
#define PAGEWISE_SYS_LOOPBACK_TCP_H_

#include <string>

#include "pagewise/status.h"

namespace pagewise::sys {

// Listens on `address`: "HOST:PORT" where HOST is 127.x.y.z, localhost or
// [::1] (port 0: any free port). Anything that is not a loopback address is
// refused with kInvalidArgument: the endpoint must not be reachable from
// other hosts. *bound (if not null) receives "HOST:PORT" with the real port.
// The socket is close-on-exec and non-blocking.
Result<int> ListenLoopbackTcp(const std::string& address, int backlog, std::string* bound);

// Accepts one connection on a listening socket; the new socket is
// close-on-exec and non-blocking (a peer that stops reading can never block
// the server). kRetry when nobody is waiting.
Result<int> AcceptNonblocking(int listen_fd);

}  // namespace pagewise::sys

#endif  // PAGEWISE_SYS_LOOPBACK_TCP_H_
