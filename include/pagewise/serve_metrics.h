// Metrics of a page server in Prometheus' text format, served over HTTP on
// a loopback address (`pagewise serve --metrics ADDR`).
//
// RenderServeMetrics turns client reports into the text exposition format
// (version 0.0.4): counters summed over every client served so far (active
// and gone), gauges of the active ones, and per-fault-class latency
// histograms (pagewise_fault_latency_seconds{class="zero|demand|
// prefetch_hit|late_prefetch"}). MetricsEndpoint answers `GET /metrics` (and
// `GET /`) with what its render function returns, one connection at a
// time, each given two seconds to send its request.
//
// Thread safety: RenderServeMetrics is a pure function. MetricsEndpoint's
// render function runs on the endpoint's thread; the object may be
// destroyed from any other thread.
#ifndef PAGEWISE_SERVE_METRICS_H_
#define PAGEWISE_SERVE_METRICS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/serve.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// Server-level figures beside the client reports.
struct ServeMetricsExtra {
  uint64_t refused = 0;               // handshakes refused
  uint64_t handovers_in = 0;          // clients taken over from a previous server
  double handover_max_stall_ms = -1;  // longest gap in service at a handover (-1: none)
};

std::string RenderServeMetrics(const std::vector<ClientReport>& clients,
                               const ServeMetricsExtra& extra);

class MetricsEndpoint {
 public:
  using RenderFn = std::function<std::string()>;
  // Listens on `address` (127.0.0.1:PORT, localhost:PORT, [::1]:PORT; port 0
  // picks a free one) and starts answering. Errors: not a loopback address
  // (kInvalidArgument), the port is taken.
  static Result<std::unique_ptr<MetricsEndpoint>> Start(const std::string& address,
                                                        RenderFn render);
  // Stops answering and closes the socket.
  virtual ~MetricsEndpoint() = default;
  // The address listened on, with the real port ("127.0.0.1:41234").
  virtual const std::string& address() const = 0;
};

// A MetricsEndpoint for `server` (which must outlive it): its clients()
// and refused() rendered at every scrape, with `extra`'s handover figures.
Result<std::unique_ptr<MetricsEndpoint>> StartServeMetrics(const PageServer* server,
                                                           const std::string& address,
                                                           ServeMetricsExtra extra = {});

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_SERVE_METRICS_H_
