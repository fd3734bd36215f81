// Bytes: the small byte-level helpers every subsystem needs, in one place.
//
// - IsAllZero: whether a buffer is all zero bytes (zero pages are stored,
//   sent and installed as zero pages: images, snapshots, restore fills).
// - Little-endian codec: the on-disk and on-wire integers of images,
//   manifests, traces and the handover protocol are little-endian, whatever
//   the host's order.
// - Hex text: lower-case hex of bytes (digests, object names, UUIDs) and
//   "0x..." addresses for messages.
//
// Thread safety: pure functions of their arguments; reentrant. They
// allocate only where they return a std::string.
#ifndef PAGEWISE_BASE_BYTES_H_
#define PAGEWISE_BASE_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace pagewise {

// True if all `len` bytes at `data` are zero (any length; `data` need not
// be aligned). Precondition: [data, data + len) is readable. Checks 64
// bytes at a time and stops at the first block with a set bit: this runs
// on every page a restore installs.
inline bool IsAllZero(const void* data, size_t len) {
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 64 <= len; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, sizeof(w));
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  for (; i < len; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// ---- little-endian codec ----------------------------------------------------
// Store*/Load*: to and from `p`, which must hold 4 (or 8) bytes; no
// alignment needed. Append*: to the end of *out.
inline void StoreLe32(void* p, uint32_t v) {
  auto* b = static_cast<unsigned char*>(p);
  for (int i = 0; i < 4; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline void StoreLe64(void* p, uint64_t v) {
  auto* b = static_cast<unsigned char*>(p);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline uint32_t LoadLe32(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(b[i]) << (8 * i);
  return v;
}
inline uint64_t LoadLe64(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(b[i]) << (8 * i);
  return v;
}
inline void AppendLe32(std::string* out, uint32_t v) {
  char b[4];
  StoreLe32(b, v);
  out->append(b, sizeof(b));
}
inline void AppendLe64(std::string* out, uint64_t v) {
  char b[8];
  StoreLe64(b, v);
  out->append(b, sizeof(b));
}

// ---- hex text ---------------------------------------------------------------
// The `len` bytes at `data` as 2 * len lower-case hex digits, first byte
// first ("00ff..."). Precondition: [data, data + len) is readable.
std::string HexBytes(const void* data, size_t len);

// `v` as "0x" and lower-case hex digits without leading zeros ("0x0",
// "0x7f1234560000"): addresses and lengths in messages.
std::string HexAddr(uint64_t v);

}  // namespace pagewise

#endif  // PAGEWISE_BASE_BYTES_H_
