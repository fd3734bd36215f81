// A PageSource that reads a dump's flat view from a CriuTcpServer.
//
// Two TCP connections to the server: a demand connection for reads at
// ReadPriority::kDemand (faults) and a bulk connection for background and
// prefetch reads, so that a fault never waits behind a background batch on
// the wire (each connection has its own socket buffers; the server answers
// demand requests first). Both start with a hello that must carry the
// layout digest and flat size of the dump the client opened: a server for
// another dump is refused before any page is read.
//
// Failure: any error on a connection (reset, timeout, a malformed
// answer) fails that read and every later one (kPeerGone / kCorruption):
// the engine then poisons the pages (SIGBUS on access), never zeros.
// on_failure is called once, with the first error.
//
// Thread safety: Read/ReadWithPriority may be called from any threads;
// each connection serialises its requests with a mutex.
#ifndef PAGEWISE_CRIU_REMOTE_SOURCE_H_
#define PAGEWISE_CRIU_REMOTE_SOURCE_H_

#include <functional>
#include <memory>
#include <string>

#include "criu/dump.h"
#include "pagewise/restore.h"
#include "pagewise/status.h"

namespace pagewise::criu {

struct RemoteSourceOptions {
  int timeout_ms = 5000;  // connect, and each answer
  std::function<void(const Status&)> on_failure;
};

Result<std::shared_ptr<PageSource>> ConnectRemoteSource(const std::string& host_port,
                                                        const CriuDump& layout,
                                                        const RemoteSourceOptions& options);

}  // namespace pagewise::criu

#endif  // PAGEWISE_CRIU_REMOTE_SOURCE_H_
