// The page server's pure checks: handshake completeness, regions against
// the source and the limits, peer access, option ranges, event lines.
#include "restore/serve_checks.h"

#include <algorithm>
#include <cstdio>

namespace pagewise {
namespace restore {

Status HandshakeScanner::Feed(std::string_view bytes) {
  for (char c : bytes) {
    if (complete_) {
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
      return Status::InvalidArgument("bytes after the handshake's JSON array (send one message)");
    }
    if (!started_) {
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
      if (c != '[') return Status::InvalidArgument("handshake body must be a JSON array");
      started_ = true;
      depth_ = 1;
      continue;
    }
    if (in_string_) {
      if (escape_) {
        escape_ = false;
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '[' || c == '{') {
      if (++depth_ > 64) return Status::InvalidArgument("handshake body nested too deeply");
    } else if (c == ']' || c == '}') {
      if (--depth_ == 0) complete_ = true;
    }
  }
  return Status::Ok();
}

Result<CheckedRegions> CheckRegions(const std::vector<Region>& regions, uint64_t source_size,
                                    uint64_t page_size, const ServeLimits& limits,
                                    std::string* limit) {
  std::string unused;
  if (limit == nullptr) limit = &unused;
  limit->clear();
  if (regions.size() > limits.max_regions) {
    *limit = "regions";
    return Status::InvalidArgument("handshake lists " + std::to_string(regions.size()) +
                                   " regions (limit " + std::to_string(limits.max_regions) + ")");
  }
  CheckedRegions out;
  constexpr uint64_t kUserLimit = uint64_t{1} << 63;
  for (size_t i = 0; i < regions.size(); ++i) {
    const Region& g = regions[i];
    const std::string where = "handshake region " + std::to_string(i);
    if (g.page_size != page_size) {
      return Status::NotSupported(where + ": page size " + std::to_string(g.page_size) +
                                  " is not supported (this server serves " +
                                  std::to_string(page_size) +
                                  "-byte pages; back guest memory with them)");
    }
    if (g.length == 0 || g.length % page_size || g.offset % page_size || g.address % page_size) {
      return Status::InvalidArgument(where + ": empty or not page aligned");
    }
    if (g.address >= kUserLimit || g.length > kUserLimit - g.address) {
      return Status::InvalidArgument(where + ": [" + std::to_string(g.address) + ", +" +
                                     std::to_string(g.length) +
                                     ") wraps or lies beyond the user address space");
    }
    if (g.offset > source_size || g.length > source_size - g.offset) {
      return Status::InvalidArgument(
          where + " lies beyond the source (offset " + std::to_string(g.offset) + ", size " +
          std::to_string(g.length) + ", source " + std::to_string(source_size) + " bytes)");
    }
    if (g.length > limits.max_client_bytes - std::min(out.bytes, limits.max_client_bytes)) {
      *limit = "client_bytes";
      return Status::InvalidArgument("handshake registers more than " +
                                     std::to_string(limits.max_client_bytes) +
                                     " bytes (limit client_bytes)");
    }
    out.bytes += g.length;
    out.space.push_back({g.address, g.length, g.offset});
  }
  std::vector<SpaceRegion> sorted = out.space;
  std::sort(sorted.begin(), sorted.end(),
            [](const SpaceRegion& a, const SpaceRegion& b) { return a.addr < b.addr; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].addr < sorted[i - 1].addr + sorted[i - 1].len) {
      return Status::InvalidArgument("handshake regions overlap at address " +
                                     std::to_string(sorted[i].addr));
    }
  }
  return out;
}

bool PeerAllowed(const ServeAccess& access, uid_t server_uid, uid_t uid, gid_t gid,
                 const std::vector<gid_t>& groups) {
  if (access.allow_uids.empty() ? uid == server_uid
                                : std::find(access.allow_uids.begin(), access.allow_uids.end(),
                                            uid) != access.allow_uids.end()) {
    return true;
  }
  for (gid_t g : access.allow_gids) {
    if (g == gid || std::find(groups.begin(), groups.end(), g) != groups.end()) return true;
  }
  return false;
}

}  // namespace restore

Status ValidateServeOptions(const ServeOptions& o) {
  auto range = [](const char* name, uint64_t v, uint64_t lo, uint64_t hi) {
    if (v >= lo && v <= hi) return Status::Ok();
    return Status::InvalidArgument(std::string(name) + " is " + std::to_string(v) +
                                   "; it must be in [" + std::to_string(lo) + ", " +
                                   std::to_string(hi) + "]");
  };
  const ServeLimits& l = o.limits;
  constexpr uint64_t kMax = UINT64_MAX;
  PW_RETURN_IF_ERROR(ValidateFillPolicy(o.fill));
  if (o.handshake_timeout <= Duration::zero()) {
    return Status::InvalidArgument("handshake_timeout must be > 0");
  }
  PW_RETURN_IF_ERROR(range("limits.max_regions", l.max_regions, 1, 1 << 20));
  PW_RETURN_IF_ERROR(range("limits.max_client_bytes", l.max_client_bytes, 1, kMax));
  PW_RETURN_IF_ERROR(range("limits.max_total_bytes", l.max_total_bytes, 1, kMax));
  PW_RETURN_IF_ERROR(range("limits.max_pending", l.max_pending, 1, 1 << 20));
  PW_RETURN_IF_ERROR(range("limits.max_clients", l.max_clients, 1, 1 << 20));
  PW_RETURN_IF_ERROR(range("limits.max_spaces", l.max_spaces, 1, 1 << 20));
  PW_RETURN_IF_ERROR(range("limits.max_finished_records", l.max_finished_records, 1, 1 << 24));
  PW_RETURN_IF_ERROR(range("limits.max_handshake_bytes", l.max_handshake_bytes, 16, 64 << 20));
  PW_RETURN_IF_ERROR(range("access.socket_mode", o.access.socket_mode, 0, 0777));
  return Status::Ok();
}

std::string_view ServeEventKindName(ServeEvent::Kind kind) {
  switch (kind) {
    case ServeEvent::Kind::kRefused:
      return "refused";
    case ServeEvent::Kind::kDropped:
      return "dropped";
    case ServeEvent::Kind::kDone:
      return "done";
    case ServeEvent::Kind::kLimit:
      return "limit";
  }
  return "unknown";
}

namespace {
// A value for a key=value line: as is when plain, else quoted and escaped.
std::string Value(std::string_view v) {
  bool plain = !v.empty();
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= ' ' || u >= 0x7f || c == '"' || c == '\\' || c == '=') plain = false;
  }
  if (plain) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < ' ' || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string Known(int64_t v) { return v < 0 ? "-" : std::to_string(v); }
}  // namespace

std::string FormatServeEvent(const ServeEvent& e) {
  std::string line = "event=" + std::string(ServeEventKindName(e.kind));
  line += " conn=" + std::to_string(e.connection);
  line += " client=" + Known(e.client);
  line += " pid=" + (e.pid > 0 ? std::to_string(e.pid) : std::string("-"));
  line += " uid=" + Known(e.uid);
  line += " gid=" + Known(e.gid);
  if (!e.limit.empty()) line += " limit=" + Value(e.limit);
  line += " code=" + std::string(CodeName(e.reason.code()));
  line += " reason=" + Value(e.reason.ok() ? "ok" : e.reason.message());
  return line;
}

}  // namespace pagewise
