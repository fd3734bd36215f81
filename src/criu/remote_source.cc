// Remote page source over TCP (see remote_source.h).
#include "criu/remote_source.h"

namespace pagewise::criu {

Result<std::shared_ptr<PageSource>> ConnectRemoteSource(const std::string& host_port,
                                                        const CriuDump& layout,
                                                        const RemoteSourceOptions& options) {
  (void)layout;
  (void)options;
  return Status::NotSupported("page server " + host_port + ": not implemented yet");
}

}  // namespace pagewise::criu
