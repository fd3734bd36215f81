// Serve handover: a running page server replaced (upgraded, restarted) by
// a new one that takes over its listening socket and its live clients -
// their userfaultfds, sockets and restore state - without a client ever
// reading a wrong byte or being dropped.
//
// How: the old server offers handover on a control socket beside its
// socket (HandoverSocketPath: mode 0600, and only a peer of the same user,
// or root, is answered). The successor connects, proves it serves the same
// bytes (the old server picks sample pages, the successor must match their
// hashes), and says go. The old server then stops serving (every engine's
// threads stop with nothing in flight; faults it had read but not served
// are woken, so their threads fault again), and passes the listening
// socket, every client's socket and userfaultfds (SCM_RIGHTS) and their
// page maps, schedules and books. Messages nobody read yet wait in the
// kernel for the successor. Once the successor has everything it says it
// took over and starts serving; the old one closes its copies and should
// exit (its Stop() then leaves the socket file alone). Until the successor
// says so, any failure (it died, its source differs) makes the old server
// resume as if nothing happened. Clients see only a pause: the stall,
// from the old server's last service to the new one's first, is reported.
//
// Limits: the successor serves with its own ServeOptions (give it the same
// --prefetch trace: prefetch progress carries over by position). Once the
// old server is told to go ahead it waits for the successor without a
// timeout (a successor that hangs then stalls the clients; one that dies
// gives them back to the old server).
//
// Thread safety: HandoverOffer's callback runs on its thread; the objects
// may be destroyed from any other thread.
#ifndef PAGEWISE_SERVE_HANDOVER_H_
#define PAGEWISE_SERVE_HANDOVER_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

#include "pagewise/export.h"
#include "pagewise/restore.h"
#include "pagewise/serve.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// The control socket of the server listening on `socket_path`.
std::string HandoverSocketPath(const std::string& socket_path);

struct HandoverReport {
  pid_t peer = 0;       // the other server's pid
  size_t clients = 0;   // active clients handed over
  size_t spaces = 0;    // their address spaces (userfaultfds)
  size_t pending = 0;   // handshakes in progress handed over
  double stall_ms = 0;  // the old server's last service to the new one's first
};

class HandoverOffer {
 public:
  // Offers `server` (serving `source`) to a successor; both must outlive
  // the offer. `on_handed_over` is called once, after a successor took
  // over: `server` serves nobody from then on.
  static Result<std::unique_ptr<HandoverOffer>> Start(
      PageServer* server, std::shared_ptr<const PageSource> source,
      std::function<void(const HandoverReport&)> on_handed_over);
  // Stops offering (and removes the control socket unless handed over).
  virtual ~HandoverOffer() = default;
  // Why the last attempt failed (the server resumed), OK if none did.
  virtual Status last_error() const = 0;
};

// Takes over the server listening on `socket_path` and serves its clients
// from `source` with `options`. Errors: no server offers handover there
// (kNotFound / kPermissionDenied), the sources differ (kFailedPrecondition,
// naming the first differing offset), the old server failed midway (it
// then serves on).
Result<std::unique_ptr<PageServer>> TakeOverPageServer(const std::string& socket_path,
                                                       std::shared_ptr<const PageSource> source,
                                                       const ServeOptions& options,
                                                       HandoverReport* report = nullptr);

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_SERVE_HANDOVER_H_
