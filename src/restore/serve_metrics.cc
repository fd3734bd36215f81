// Prometheus text rendering of page-server client reports, and the HTTP
// endpoint that serves it on a loopback address.
#include "pagewise/serve_metrics.h"

#include <poll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <thread>
#include <utility>

#include "sys/env.h"
#include "sys/fd_util.h"
#include "sys/loopback_tcp.h"

namespace pagewise {
namespace {

class Text {
 public:
  void Family(const char* name, const char* type, const char* help) {
    out_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void Sample(const std::string& name, double v) {
    char b[64];
    std::snprintf(b, sizeof(b), " %.17g\n", v);
    out_ += name + b;
  }
  void Counter(const char* name, const char* help, double v) {
    Family(name, "counter", help);
    Sample(name, v);
  }
  void Gauge(const char* name, const char* help, double v) {
    Family(name, "gauge", help);
    Sample(name, v);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

void AddHistogram(const LatencyHistogram& from, LatencyHistogram* to) {
  for (int k = 0; k < LatencyHistogram::kBuckets; ++k) to->counts[k] += from.counts[k];
  to->count += from.count;
  to->sum_ns += from.sum_ns;
  to->max_ns = std::max(to->max_ns, from.max_ns);
}

void Histogram(Text* t, const char* name, const char* cls, const LatencyHistogram& h) {
  const std::string base = std::string(name);
  const std::string label = std::string("class=\"") + cls + "\"";
  uint64_t cum = 0;
  for (int k = 0; k < LatencyHistogram::kBuckets - 1; ++k) {
    cum += h.counts[k];
    char le[32];
    std::snprintf(le, sizeof(le), "%g",
                  static_cast<double>(LatencyHistogram::BucketUpperNs(k)) / 1e9);
    t->Sample(base + "_bucket{" + label + ",le=\"" + le + "\"}", static_cast<double>(cum));
  }
  t->Sample(base + "_bucket{" + label + ",le=\"+Inf\"}", static_cast<double>(h.count));
  t->Sample(base + "_sum{" + label + "}", static_cast<double>(h.sum_ns) / 1e9);
  t->Sample(base + "_count{" + label + "}", static_cast<double>(h.count));
}

}  // namespace

// One family after the other, in a fixed order: long, but flat and
// readable as the list of what is exported.
std::string RenderServeMetrics(const std::vector<ClientReport>& clients,
                               const ServeMetricsExtra& extra) {
  RestoreStats sum;
  uint64_t active = 0, pages_active = 0, unfilled_active = 0;
  LatencyHistogram zero, demand, hit, late;
  for (const ClientReport& c : clients) {
    const RestoreStats& s = c.stats;
    if (c.active) {
      active++;
      pages_active += s.pages_total;
      const uint64_t installed = s.pages_demand + s.pages_background + s.eexist_pages;
      unfilled_active += s.pages_total > installed ? s.pages_total - installed : 0;
    }
    sum.demand_faults += s.demand_faults;
    sum.other_faults += s.other_faults;
    sum.pages_demand += s.pages_demand;
    sum.pages_readahead += s.pages_readahead;
    sum.pages_prefetch += s.pages_prefetch;
    sum.pages_background += s.pages_background;
    sum.zero_pages += s.zero_pages;
    sum.bytes_demand += s.bytes_demand;
    sum.bytes_readahead += s.bytes_readahead;
    sum.bytes_prefetch += s.bytes_prefetch;
    sum.bytes_background += s.bytes_background;
    sum.prefetch_hit_faults += s.prefetch_hit_faults;
    sum.prefetch_late_faults += s.prefetch_late_faults;
    sum.prefetch_waste_entries += s.prefetch_waste_entries;
    sum.eexist_pages += s.eexist_pages;
    sum.eagain_retries += s.eagain_retries;
    sum.poisoned_pages += s.poisoned_pages;
    sum.forks += s.forks;
    sum.remaps += s.remaps;
    sum.removes += s.removes;
    sum.unmaps += s.unmaps;
    AddHistogram(s.latency_zero, &zero);
    AddHistogram(s.latency_demand, &demand);
    AddHistogram(s.latency_prefetch_hit, &hit);
    AddHistogram(s.latency_late_prefetch, &late);
  }
  Text t;
  t.Gauge("pagewise_clients_active", "Clients being served now.", static_cast<double>(active));
  t.Counter("pagewise_clients_total", "Clients served since the server started.",
            static_cast<double>(clients.size()));
  t.Counter("pagewise_handshakes_refused_total", "Handshakes refused.",
            static_cast<double>(extra.refused));
  t.Counter("pagewise_handover_clients_total", "Clients taken over from a previous server.",
            static_cast<double>(extra.handovers_in));
  if (extra.handover_max_stall_ms >= 0) {
    t.Gauge("pagewise_handover_max_stall_seconds",
            "Longest gap in service while taking over from a previous server.",
            extra.handover_max_stall_ms / 1e3);
  }
  t.Gauge("pagewise_pages_registered", "Pages of the active clients' regions.",
          static_cast<double>(pages_active));
  t.Gauge("pagewise_pages_unfilled", "Pages of the active clients not installed yet.",
          static_cast<double>(unfilled_active));
  t.Counter("pagewise_demand_faults_total", "Faults that needed source data.",
            static_cast<double>(sum.demand_faults));
  t.Counter("pagewise_other_faults_total", "Faults served with a zero page or a wake-up.",
            static_cast<double>(sum.other_faults));
  t.Family("pagewise_pages_installed_total", "counter",
           "Source pages installed, by the path that installed them.");
  t.Sample("pagewise_pages_installed_total{path=\"demand\"}",
           static_cast<double>(sum.pages_demand - sum.pages_readahead));
  t.Sample("pagewise_pages_installed_total{path=\"readahead\"}",
           static_cast<double>(sum.pages_readahead));
  t.Sample("pagewise_pages_installed_total{path=\"prefetch\"}",
           static_cast<double>(sum.pages_prefetch));
  t.Sample("pagewise_pages_installed_total{path=\"background\"}",
           static_cast<double>(sum.pages_background - sum.pages_prefetch));
  t.Family("pagewise_bytes_copied_total", "counter",
           "Bytes installed with UFFDIO_COPY, by the path that installed them.");
  t.Sample("pagewise_bytes_copied_total{path=\"demand\"}", static_cast<double>(sum.bytes_demand));
  t.Sample("pagewise_bytes_copied_total{path=\"readahead\"}",
           static_cast<double>(sum.bytes_readahead));
  t.Sample("pagewise_bytes_copied_total{path=\"prefetch\"}",
           static_cast<double>(sum.bytes_prefetch));
  t.Sample("pagewise_bytes_copied_total{path=\"background\"}",
           static_cast<double>(sum.bytes_background));
  t.Counter("pagewise_zero_pages_total", "Pages installed with UFFDIO_ZEROPAGE.",
            static_cast<double>(sum.zero_pages));
  t.Counter("pagewise_prefetch_hit_faults_total",
            "Faults on prefetch-list pages the prefetch had installed or was installing.",
            static_cast<double>(sum.prefetch_hit_faults));
  t.Counter("pagewise_prefetch_late_faults_total",
            "Faults on prefetch-list pages not yet installed (served on demand).",
            static_cast<double>(sum.prefetch_late_faults));
  t.Counter("pagewise_prefetch_waste_entries_total",
            "Prefetch-list entries that installed nothing (already present, dropped, outside).",
            static_cast<double>(sum.prefetch_waste_entries));
  t.Counter("pagewise_eexist_pages_total", "Pages found already present.",
            static_cast<double>(sum.eexist_pages));
  t.Counter("pagewise_eagain_retries_total", "Fills retried after EAGAIN.",
            static_cast<double>(sum.eagain_retries));
  t.Counter("pagewise_poisoned_pages_total", "Pages poisoned because the source failed.",
            static_cast<double>(sum.poisoned_pages));
  t.Family("pagewise_events_total", "counter", "Non-cooperative userfaultfd events.");
  t.Sample("pagewise_events_total{kind=\"fork\"}", static_cast<double>(sum.forks));
  t.Sample("pagewise_events_total{kind=\"remap\"}", static_cast<double>(sum.remaps));
  t.Sample("pagewise_events_total{kind=\"remove\"}", static_cast<double>(sum.removes));
  t.Sample("pagewise_events_total{kind=\"unmap\"}", static_cast<double>(sum.unmaps));
  t.Family("pagewise_fault_latency_seconds", "histogram",
           "Fault service latency (message read to resolved), by fault class.");
  Histogram(&t, "pagewise_fault_latency_seconds", "zero", zero);
  Histogram(&t, "pagewise_fault_latency_seconds", "demand", demand);
  Histogram(&t, "pagewise_fault_latency_seconds", "prefetch_hit", hit);
  Histogram(&t, "pagewise_fault_latency_seconds", "late_prefetch", late);
  return t.Take();
}

namespace {

constexpr int kRequestTimeoutMs = 2000;
constexpr size_t kMaxRequestBytes = 8192;

class MetricsEndpointImpl final : public MetricsEndpoint {
 public:
  MetricsEndpointImpl(Env* env, int listen_fd, int stop_fd, std::string address, RenderFn render)
      : env_(env),
        listen_fd_(listen_fd),
        stop_fd_(stop_fd),
        address_(std::move(address)),
        render_(std::move(render)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~MetricsEndpointImpl() override {
    sys::SignalEventfd(stop_fd_);
    thread_.join();
    env_->Close(listen_fd_).IgnoreError();  // teardown
    env_->Close(stop_fd_).IgnoreError();
  }
  const std::string& address() const override { return address_; }

 private:
  void Loop() {
    for (;;) {
      struct pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      Result<int> n = env_->Poll(fds, 2, -1);
      if (!n.ok() || (fds[1].revents & POLLIN)) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      Result<int> conn = sys::AcceptNonblocking(listen_fd_);
      if (!conn.ok()) continue;  // e.g. the peer gave up already
      Answer(*conn);
      env_->Close(*conn).IgnoreError();  // the peer reads until end of stream
    }
  }

  // Reads the request head (bounded in size and time), answers it.
  void Answer(int conn) {
    std::string req;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(kRequestTimeoutMs);
    while (req.find("\r\n\r\n") == std::string::npos && req.find("\n\n") == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0 || req.size() > kMaxRequestBytes) return;
      struct pollfd fds[2] = {{conn, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      Result<int> n = env_->Poll(fds, 2, static_cast<int>(left));
      if (!n.ok() || (fds[1].revents & POLLIN)) return;
      if (*n == 0) continue;
      char buf[2048];
      int fd = -1;
      Result<size_t> got = env_->RecvWithFd(conn, buf, sizeof(buf), &fd);
      if (fd >= 0) env_->Close(fd).IgnoreError();               // not part of HTTP
      if (!got.ok() && got.status().err() == EAGAIN) continue;  // spurious wake-up
      if (!got.ok() || *got == 0) return;
      req.append(buf, *got);
    }
    const bool ok = req.rfind("GET /metrics", 0) == 0 || req.rfind("GET / ", 0) == 0;
    const std::string body = ok ? render_() : "not found: try GET /metrics\n";
    const std::string head = std::string(ok ? "HTTP/1.1 200 OK" : "HTTP/1.1 404 Not Found") +
                             "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"
                             "\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    const std::string all = head + body;
    size_t off = 0;
    while (off < all.size()) {
      struct pollfd fds[1] = {{conn, POLLOUT, 0}};
      Result<int> n = env_->Poll(fds, 1, kRequestTimeoutMs);
      if (!n.ok() || *n == 0) return;  // a reader that does not read: give up
      Result<size_t> sent = env_->SendWithFd(conn, all.data() + off, all.size() - off, -1);
      if (!sent.ok() && sent.status().err() == EAGAIN) continue;  // full again: poll
      if (!sent.ok()) return;
      off += *sent;
    }
  }

  Env* env_;
  int listen_fd_;
  int stop_fd_;
  std::string address_;
  RenderFn render_;
  std::thread thread_;
};

}  // namespace

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& address,
                                                                RenderFn render) {
  Env* env = Env::Default();
  std::string bound;
  PW_ASSIGN_OR_RETURN(int fd, sys::ListenLoopbackTcp(address, 16, &bound));
  Result<int> stop = env->EventfdCreate(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!stop.ok()) {
    env->Close(fd).IgnoreError();  // already failing
    return stop.status();
  }
  return std::unique_ptr<MetricsEndpoint>(
      std::make_unique<MetricsEndpointImpl>(env, fd, *stop, bound, std::move(render)));
}

Result<std::unique_ptr<MetricsEndpoint>> StartServeMetrics(const PageServer* server,
                                                           const std::string& address,
                                                           ServeMetricsExtra base) {
  return MetricsEndpoint::Start(address, [server, base] {
    ServeMetricsExtra extra = base;
    extra.refused = server->refused();
    return RenderServeMetrics(server->clients(), extra);
  });
}

}  // namespace pagewise
