// Image format v1: on-disk structures, their little-endian encoding and
// decoding, and the checksums. docs/image-format.md is the specification;
// this file is its executable form. Decoders bound every count and length by
// the bytes actually present, so malicious input can never make them
// allocate more than the input's size (times a small constant) or read out
// of bounds; they return kCorruption naming the file offset of the bad field.
//
// Thread safety: pure functions over caller-owned buffers; safe from any
// thread.
#ifndef PAGEWISE_IMAGE_FORMAT_H_
#define PAGEWISE_IMAGE_FORMAT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/status.h"

namespace pagewise::image {

// ---- constants --------------------------------------------------------------
inline constexpr char kMagic[8] = {'P', 'W', 'I', 'M', 'G', '\r', '\n', '\x1a'};
inline constexpr uint32_t kVersion = 1;
inline constexpr uint32_t kHeaderSize = 256;         // v1 fixed header, also data start
inline constexpr uint32_t kMinHeaderSize = 64;       // any version: frozen prefix + checksum
inline constexpr uint32_t kMaxHeaderSize = 65536;    // any version
inline constexpr uint32_t kIndexMagic = 0x58495750;  // "PWIX" little endian
inline constexpr uint32_t kMinPageSize = 512;
inline constexpr uint32_t kMaxPageSize = 16u << 20;
inline constexpr uint32_t kMaxChunkRawBytes = 16u << 20;
inline constexpr uint32_t kMaxSlotsPerChunk = 65536;  // slot is 16 bits
inline constexpr uint32_t kMaxStringBytes = 4096;     // parent path, region names
inline constexpr uint64_t kMaxChunkId = (uint64_t{1} << 47) - 1;
inline constexpr size_t kChunkEntryBytes = 40;
inline constexpr size_t kRegionFixedBytes = 40;
inline constexpr size_t kRunFixedBytes = 24;
inline constexpr size_t kIndexFixedBytes = 16;

enum class RunKind : uint32_t { kZero = 0, kData = 1 };

using Uuid = std::array<uint8_t, 16>;

// The fixed v1 header (256 bytes at file offset 0).
struct Header {
  uint32_t version = kVersion;
  uint32_t header_size = kHeaderSize;
  uint32_t incompat_flags = 0;
  uint32_t compat_flags = 0;
  uint32_t page_size = 0;  // smallest region page size (informational)
  uint32_t region_count = 0;
  uint64_t file_size = 0;
  uint64_t index_offset = 0;
  uint64_t index_length = 0;
  uint64_t index_checksum = 0;
  Uuid uuid{};
  Uuid parent_uuid{};  // all zero: no parent
  uint64_t stat_pages = 0;
  uint64_t stat_zero_pages = 0;
  uint64_t stat_duplicate_pages = 0;
  uint64_t stat_stored_pages = 0;
  uint64_t stat_raw_bytes = 0;
  uint64_t stat_compressed_bytes = 0;
  uint64_t chunk_count = 0;
  uint64_t run_count = 0;
  uint8_t compression = 0;  // writer's choice (informational)
};

// One data chunk (index chunk table entry).
struct ChunkEntry {
  uint64_t file_offset = 0;
  uint32_t stored_length = 0;
  uint32_t page_count = 0;
  uint32_t page_size = 0;
  uint8_t compression = 0;
  uint64_t stored_checksum = 0;  // XXH3-64 of the stored bytes
  uint64_t raw_checksum = 0;     // XXH3-64 of the uncompressed bytes
  uint64_t raw_length() const { return uint64_t{page_count} * page_size; }
};

// A page reference inside a data run: chunk id and slot.
inline uint64_t MakeRef(uint64_t chunk, uint32_t slot) { return (chunk << 16) | slot; }
inline uint64_t RefChunk(uint64_t ref) { return ref >> 16; }
inline uint32_t RefSlot(uint64_t ref) { return static_cast<uint32_t>(ref & 0xffff); }

// A run of consecutive pages of one region. Data runs own `count` refs,
// stored (in memory) at refs[ref_index, ref_index + count).
struct Run {
  uint32_t region = 0;
  RunKind kind = RunKind::kZero;
  uint64_t first_page = 0;
  uint64_t count = 0;
  uint64_t ref_index = 0;
};

// The decoded index of one layer.
struct Index {
  std::string parent_path;
  std::vector<Region> regions;
  std::vector<ChunkEntry> chunks;
  std::vector<Run> runs;       // sorted by (region, first_page), disjoint
  std::vector<uint64_t> refs;  // data-run refs, in run order
};

// ---- checksums ------------------------------------------------------------------
uint64_t Checksum64(const void* data, size_t len);  // XXH3-64, seed 0
struct Hash128 {
  uint64_t lo = 0, hi = 0;
  bool operator==(const Hash128& o) const { return lo == o.lo && hi == o.hi; }
};
Hash128 PageHash(const void* data, size_t len);  // XXH3-128, seed 0

// A fresh random image identity (never all zero).
Uuid NewUuid();
bool IsNullUuid(const Uuid& u);
std::string UuidString(const Uuid& u);

// ---- header ---------------------------------------------------------------------
// Encodes `h` into exactly kHeaderSize bytes, with the header checksum.
std::vector<uint8_t> EncodeHeader(const Header& h);
// Decodes and checks a header from the first bytes of a file of `file_size`
// bytes (`buf` holds min(file_size, kMaxHeaderSize) bytes at least up to the
// header size it declares, or all of the file). `where` names the layer in
// messages. Checks in order: size, magic, header_size, checksum, version
// (kNotSupported naming both versions), incompat flags, field ranges against
// file_size. On failure *bad_at (if not null) is the file offset of the
// offending field (the file size for truncation).
Result<Header> DecodeHeader(const uint8_t* buf, size_t buf_len, uint64_t file_size,
                            const std::string& where, uint64_t* bad_at = nullptr);

// ---- index ----------------------------------------------------------------------
// Encodes the index. `runs` must be sorted and refer to `refs` as described
// in Run; the encoding interleaves each data run's refs after it.
std::vector<uint8_t> EncodeIndex(const Index& index);
// Decodes and validates an index whose bytes start at file offset
// `index_offset` (for messages). Validates: exact length, counts against the
// header, strings, regions (page size, length), chunk entries (inside the
// data area [kHeaderSize, index_offset), contiguous coverage, sizes), runs
// (sorted, disjoint, inside their region, refs to existing slots of chunks
// with the region's page size), stats against the header. On failure
// *bad_at (if not null) is the file offset of the offending entry.
Result<Index> DecodeIndex(const uint8_t* buf, size_t len, const Header& h, const std::string& where,
                          uint64_t* bad_at = nullptr);

// Validates a Region for writing (page size, alignment).
Status ValidateRegion(const Region& r);

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_FORMAT_H_
