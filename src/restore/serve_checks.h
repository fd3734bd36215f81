// The page server's checks on what a client sends, as pure functions (no
// system calls, no server state), so that they can be unit-tested and
// fuzzed on their own (fuzz/serve_handshake_fuzz.cc):
//   - HandshakeScanner: when the handshake body is complete (the top-level
//     JSON array closed), in O(bytes) over all reads, without reparsing;
//   - CheckRegions: a parsed handshake against the source, the system page
//     size and ServeLimits (alignment, wrap, overlap, counts, bytes).
//
// Thread safety: a HandshakeScanner belongs to one pending connection;
// CheckRegions and ValidateServeOptions are stateless.
#ifndef PAGEWISE_RESTORE_SERVE_CHECKS_H_
#define PAGEWISE_RESTORE_SERVE_CHECKS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/serve.h"
#include "pagewise/status.h"
#include "restore/engine.h"

namespace pagewise::restore {

// Follows the bytes of a handshake body as they arrive. The body must be a
// JSON array (anything else is refused at its first byte); it is complete
// when the array's closing bracket arrives (brackets inside strings do not
// count). Bytes after it are an error (the client sends one message).
class HandshakeScanner {
 public:
  // Feeds the next bytes. Errors (kInvalidArgument): not an array, bytes
  // after the end, nesting deeper than 64.
  Status Feed(std::string_view bytes);
  bool complete() const { return complete_; }

 private:
  bool started_ = false;
  bool complete_ = false;
  bool in_string_ = false;
  bool escape_ = false;
  int depth_ = 0;
};

// A handshake that passed CheckRegions: the engine's regions and the bytes
// they register.
struct CheckedRegions {
  std::vector<SpaceRegion> space;
  uint64_t bytes = 0;
};

// Checks `regions` (ParseHandshake's output): count <= max_regions; each
// page size equals `page_size` (hugetlbfs-backed memory is kNotSupported);
// address, size and offset page aligned, size > 0; [addr, addr+size) does
// not wrap and lies in the user address space (below 2^63); no two
// regions overlap in the client's address space; [offset, offset+size)
// lies within the source's `source_size` bytes; the sum of sizes <=
// max_client_bytes. On failure *limit (optional) names the ServeLimits
// field that was exceeded ("regions", "client_bytes"), else stays empty.
// Errors: kInvalidArgument (kNotSupported for page sizes) naming the region.
Result<CheckedRegions> CheckRegions(const std::vector<Region>& regions, uint64_t source_size,
                                    uint64_t page_size, const ServeLimits& limits,
                                    std::string* limit = nullptr);

// True if the peer may connect under `access` (`server_uid`: the uid used
// when access.allow_uids is empty).
bool PeerAllowed(const ServeAccess& access, uid_t server_uid, uid_t uid, gid_t gid,
                 const std::vector<gid_t>& groups);

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_SERVE_CHECKS_H_
