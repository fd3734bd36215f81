// Serve handover, inside: what a page server hands to its successor and
// the three hooks the handover protocol (server_handover.cc) needs from a
// running PageServer (server.cc). The public side is
// include/pagewise/serve_handover.h.
//
// Thread safety: ServerExport is a plain value that owns its descriptors;
// the HandoverPort methods may be called from any thread but not
// concurrently with each other or with Stop().
#ifndef PAGEWISE_RESTORE_SERVER_HANDOVER_H_
#define PAGEWISE_RESTORE_SERVER_HANDOVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/serve.h"
#include "restore/engine_handover.h"
#include "sys/env.h"

namespace pagewise::restore {

struct HandoverClient {
  ClientReport report;  // id, pid, regions, books so far
  int sock = -1;        // owned: the client's connection
  bool ready_sent = false;
  EngineExport engine;  // its spaces (owned userfaultfds) and state
};

// An accepted connection whose handshake was not complete.
struct HandoverPending {
  int sock = -1;  // owned
  int uffd = -1;  // owned, if it arrived already
  std::string body;
  int64_t ms_left = 0;
};

struct ServerExport {
  int listen_fd = -1;  // owned: the listening socket (same path)
  std::vector<HandoverClient> active;
  std::vector<ClientReport> done;  // clients served and gone (for the books)
  std::vector<HandoverPending> pending;
  uint64_t next_id = 0;
  uint64_t refused = 0;
  WorkingSetTrace first_trace;
  int64_t quiesce_ns = 0;  // CLOCK_MONOTONIC when the old server stopped serving
  void CloseAll();
};

// What a page server offers the handover protocol.
class HandoverPort {
 public:
  virtual ~HandoverPort() = default;
  // Stops accepting and serving (every engine exported) and hands out the
  // listening socket, the connections and their state. The server then
  // serves nothing until ResumeFromExport.
  virtual Result<ServerExport> ExportForHandover() = 0;
  // The successor failed before taking over: serve again from `state`.
  virtual Status ResumeFromExport(ServerExport state) = 0;
  // The successor took over: Stop() must then leave the socket file alone.
  virtual void HandedOver() = 0;
};

// The page server's port (nullptr if `server` is not pagewise's).
HandoverPort* HandoverPortOf(PageServer* server);

// The checks PageServer::Start makes of its arguments.
Status CheckServeOptions(const PageSource* source, const ServeOptions& options);

// A page server on an existing listening socket (owned from here on); with
// `import`, it continues from a handed-over state (clients, pending
// handshakes) before it accepts. Clients whose engine cannot start are
// dropped (their connection closed). PageServer::Start is this after
// listening afresh. `options` must have passed CheckServeOptions.
Result<std::unique_ptr<PageServer>> StartPageServerOn(const std::string& socket_path,
                                                      std::shared_ptr<const PageSource> source,
                                                      const ServeOptions& options, Env* env,
                                                      int listen_fd, ServerExport* import);

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_SERVER_HANDOVER_H_
