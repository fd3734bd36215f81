// libFuzzer target for the page server's path through what a client
// controls, beyond the body parser handshake_fuzz.cc covers: the body
// arriving in arbitrary pieces (HandshakeScanner), the parsed regions
// against limits and a source (CheckRegions), the fdinfo text of a
// descriptor (ParseUffdFdinfo), and the structured event line a refusal
// produces from client-influenced text (FormatServeEvent). Nothing may
// crash, hang or allocate without bound, and the checks' promises hold:
// admitted regions are within the limits, inside the source, aligned and
// disjoint; an event is always one line.
//
// Input: [split u8][limit u8][bytes]: `split` cuts the bytes into pieces
// for the scanner, `limit` picks max_regions and max_client_bytes.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/serve.h"
#include "restore/serve_checks.h"
#include "sys/uffd_check.h"

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kSource = uint64_t{1} << 30;

void CheckAdmitted(const pagewise::restore::CheckedRegions& c, const pagewise::ServeLimits& l) {
  if (c.space.size() > l.max_regions || c.bytes > l.max_client_bytes) std::abort();
  uint64_t sum = 0;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& r : c.space) {
    if (r.len == 0 || r.addr % kPage || r.len % kPage || r.src % kPage) std::abort();
    if (r.addr + r.len < r.addr || r.src + r.len > kSource || r.src + r.len < r.src) std::abort();
    sum += r.len;
    spans.emplace_back(r.addr, r.addr + r.len);
  }
  if (sum != c.bytes) std::abort();
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) std::abort();  // overlap admitted
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t piece = 1 + data[0];
  pagewise::ServeLimits limits;
  limits.max_regions = 1 + (data[1] & 15);
  limits.max_client_bytes = kPage << (data[1] >> 4);
  const std::string_view bytes(reinterpret_cast<const char*>(data + 2), size - 2);

  // The body as the accept loop sees it: in pieces, complete at most once.
  pagewise::restore::HandshakeScanner scanner;
  bool complete = false;
  for (size_t off = 0; off < bytes.size(); off += piece) {
    if (!scanner.Feed(bytes.substr(off, piece)).ok()) break;
    if (scanner.complete()) complete = true;
  }
  if (complete && !scanner.complete()) std::abort();

  pagewise::Result<std::vector<pagewise::Region>> regions = pagewise::ParseHandshake(bytes);
  if (regions.ok()) {
    std::string limit;
    auto checked = pagewise::restore::CheckRegions(*regions, kSource, kPage, limits, &limit);
    if (checked.ok()) CheckAdmitted(*checked, limits);
    pagewise::ServeEvent e;
    e.kind = pagewise::ServeEvent::Kind::kRefused;
    e.limit = limit;
    e.reason = checked.ok() ? pagewise::Status::Ok() : checked.status();
    if (pagewise::FormatServeEvent(e).find('\n') != std::string::npos) std::abort();
  }

  // Text a client cannot normally choose, parsed as if it were fdinfo.
  (void)pagewise::sys::ParseUffdFdinfo(bytes);

  // A refusal's reason may quote client bytes: still one line.
  pagewise::ServeEvent e;
  e.kind = pagewise::ServeEvent::Kind::kDropped;
  e.reason = pagewise::Status::InvalidArgument(std::string(bytes));
  e.limit = std::string(bytes.substr(0, 16));
  const std::string line = pagewise::FormatServeEvent(e);
  if (line.find('\n') != std::string::npos || line.find('\r') != std::string::npos) std::abort();
  return 0;
}
