// What `pagewise serve` prints: one structured line (key=value) per client
// connect and end and per refused handshake, dropped client or limit hit,
// on stderr; the --json summary at exit. Output errors (a closed stderr or
// stdout) are ignored: the server keeps serving.
//
// Thread safety: ServeReporter's methods may be called from any thread
// (the server's callbacks); it serialises its output.
#ifndef PAGEWISE_CLI_SERVE_REPORT_H_
#define PAGEWISE_CLI_SERVE_REPORT_H_

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pagewise/serve.h"

namespace pagewise::cli {

class ServeReporter {
 public:
  // quiet: no per-client connect/done lines (refusals, drops and limits are
  // always printed).
  explicit ServeReporter(bool quiet) : quiet_(quiet) {}

  void OnClient(const ClientReport& c);
  void OnEvent(const ServeEvent& e);

  // {"clients": [...], "refused": N, "accept_failures": N,
  //  "events": {"refused": N, ...}, "recent_events": [...]}.
  nlohmann::json Summary(const std::vector<ClientReport>& clients, const PageServer& server) const;

 private:
  static constexpr size_t kRecentEvents = 256;
  const bool quiet_;
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> counts_;  // by event kind
  std::deque<nlohmann::json> recent_;
};

nlohmann::json ClientJson(const ClientReport& c);

}  // namespace pagewise::cli

#endif  // PAGEWISE_CLI_SERVE_REPORT_H_
