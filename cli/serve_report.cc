// ServeReporter: per-client and per-event lines, and the JSON summary.
#include "serve_report.h"

#include <cstdio>

#include "command.h"

namespace pagewise::cli {
namespace {

nlohmann::json EventJson(const ServeEvent& e) {
  nlohmann::json j = {{"event", ServeEventKindName(e.kind)},
                      {"connection", e.connection},
                      {"code", CodeName(e.reason.code())},
                      {"reason", e.reason.ok() ? "ok" : e.reason.message()}};
  if (e.client >= 0) j["client"] = e.client;
  if (e.pid > 0) j["pid"] = e.pid;
  if (e.uid >= 0) j["uid"] = e.uid;
  if (e.gid >= 0) j["gid"] = e.gid;
  if (!e.limit.empty()) j["limit"] = e.limit;
  return j;
}

// One line on stderr; a failed write is dropped (SIGPIPE is ignored).
void Line(const std::string& s) { std::fprintf(stderr, "pagewise serve: %s\n", s.c_str()); }

}  // namespace

nlohmann::json ClientJson(const ClientReport& c) {
  const RestoreStats& s = c.stats;
  return {{"id", c.id},
          {"connection", c.connection},
          {"pid", c.pid},
          {"uid", c.uid},
          {"gid", c.gid},
          {"status", c.status.ok() ? "ok" : c.status.ToString()},
          {"demand_faults", s.demand_faults},
          {"pages_demand", s.pages_demand},
          {"pages_background", s.pages_background},
          {"pages_prefetch", s.pages_prefetch},
          {"prefetch_late_faults", s.prefetch_late_faults},
          {"prefetch_hit_faults", s.prefetch_hit_faults},
          {"prefetch_waste_entries", s.prefetch_waste_entries},
          {"pages_readahead", s.pages_readahead},
          {"zero_pages", s.zero_pages},
          {"poisoned_pages", s.poisoned_pages},
          {"bytes_copied", s.bytes_copied},
          {"removes", s.removes},
          {"forks", s.forks},
          {"spaces_refused", s.spaces_refused},
          {"first_fault_seconds", NsToSeconds(s.first_fault_ns)},
          {"resident_seconds", NsToSeconds(s.resident_ns)},
          {"fault_latency_p50_us", static_cast<double>(s.fault_latency_p50_ns) / 1e3},
          {"fault_latency_p99_us", static_cast<double>(s.fault_latency_p99_ns) / 1e3}};
}

void ServeReporter::OnClient(const ClientReport& c) {
  if (quiet_) return;
  char buf[512];
  if (c.active) {
    uint64_t bytes = 0;
    for (const Region& r : c.regions) bytes += r.length;
    std::snprintf(buf, sizeof(buf),
                  "event=connected conn=%llu client=%llu pid=%d uid=%u gid=%u regions=%zu "
                  "bytes=%llu uffd_features=0x%llx",
                  static_cast<unsigned long long>(c.connection),
                  static_cast<unsigned long long>(c.id), static_cast<int>(c.pid), c.uid, c.gid,
                  c.regions.size(), static_cast<unsigned long long>(bytes),
                  static_cast<unsigned long long>(c.uffd_features));
  } else {
    const RestoreStats& s = c.stats;
    std::snprintf(buf, sizeof(buf),
                  "stats client=%llu demand_faults=%llu pages_demand=%llu "
                  "pages_background=%llu pages_prefetch=%llu zero_pages=%llu "
                  "poisoned_pages=%llu resident_s=%.3f fault_p50_us=%.1f fault_p99_us=%.1f",
                  static_cast<unsigned long long>(c.id),
                  static_cast<unsigned long long>(s.demand_faults),
                  static_cast<unsigned long long>(s.pages_demand),
                  static_cast<unsigned long long>(s.pages_background),
                  static_cast<unsigned long long>(s.pages_prefetch),
                  static_cast<unsigned long long>(s.zero_pages),
                  static_cast<unsigned long long>(s.poisoned_pages), NsToSeconds(s.resident_ns),
                  static_cast<double>(s.fault_latency_p50_ns) / 1e3,
                  static_cast<double>(s.fault_latency_p99_ns) / 1e3);
  }
  std::lock_guard<std::mutex> lk(mu_);
  Line(buf);
}

void ServeReporter::OnEvent(const ServeEvent& e) {
  std::lock_guard<std::mutex> lk(mu_);
  counts_[std::string(ServeEventKindName(e.kind))]++;
  recent_.push_back(EventJson(e));
  if (recent_.size() > kRecentEvents) recent_.pop_front();
  if (quiet_ && e.kind == ServeEvent::Kind::kDone) return;
  Line(FormatServeEvent(e));
}

nlohmann::json ServeReporter::Summary(const std::vector<ClientReport>& clients,
                                      const PageServer& server) const {
  nlohmann::json list = nlohmann::json::array();
  for (const ClientReport& c : clients) list.push_back(ClientJson(c));
  std::lock_guard<std::mutex> lk(mu_);
  nlohmann::json counts = nlohmann::json::object();
  for (const auto& [kind, n] : counts_) counts[kind] = n;
  nlohmann::json recent = nlohmann::json::array();
  for (const auto& e : recent_) recent.push_back(e);
  return {{"clients", list},
          {"refused", server.refused()},
          {"accept_failures", server.accept_failures()},
          {"events", counts},
          {"recent_events", recent}};
}

}  // namespace pagewise::cli
