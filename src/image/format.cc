// Image format v1: header encoding/decoding, checksums, identities.
// The index codec is in index_codec.cc.
#include "image/format.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "base/bytes.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "sys/process.h"

namespace pagewise::image {

uint64_t Checksum64(const void* data, size_t len) { return XXH3_64bits(data, len); }

Hash128 PageHash(const void* data, size_t len) {
  XXH128_hash_t h = XXH3_128bits(data, len);
  return Hash128{h.low64, h.high64};
}

Uuid NewUuid() {
  // random_device (getrandom) mixed with time and pid and a counter, so two
  // writers started in the same instant still differ even if random_device
  // were deterministic.
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  uint64_t a = (uint64_t{rd()} << 32) ^ rd();
  uint64_t b = (uint64_t{rd()} << 32) ^ rd();
  uint64_t mix[4] = {
      a, b,
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
          (uint64_t{static_cast<uint32_t>(sys::SelfPid())} << 32),
      counter.fetch_add(1)};
  XXH128_hash_t h = XXH3_128bits(mix, sizeof(mix));
  Uuid u;
  std::memcpy(u.data(), &h.low64, 8);
  std::memcpy(u.data() + 8, &h.high64, 8);
  if (IsNullUuid(u)) u[0] = 1;
  return u;
}

bool IsNullUuid(const Uuid& u) {
  for (uint8_t b : u) {
    if (b != 0) return false;
  }
  return true;
}

std::string UuidString(const Uuid& u) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < u.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    s.push_back(hex[u[i] >> 4]);
    s.push_back(hex[u[i] & 15]);
  }
  return s;
}

// Header field offsets (docs/image-format.md, "Header").
namespace {
enum HeaderOffset : size_t {
  kOffMagic = 0,
  kOffVersion = 8,
  kOffHeaderSize = 12,
  kOffIncompat = 16,
  kOffCompat = 20,
  kOffPageSize = 24,
  kOffRegionCount = 28,
  kOffFileSize = 32,
  kOffIndexOffset = 40,
  kOffIndexLength = 48,
  kOffIndexChecksum = 56,
  kOffUuid = 64,
  kOffParentUuid = 80,
  kOffStatPages = 96,
  kOffStatZero = 104,
  kOffStatDup = 112,
  kOffStatStored = 120,
  kOffStatRaw = 128,
  kOffStatCompressed = 136,
  kOffChunkCount = 144,
  kOffRunCount = 152,
  kOffCompression = 160,
  kOffHeaderChecksum = kHeaderSize - 8,
};

bool IsPow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

Status HeaderCorrupt(uint64_t* bad_at, const std::string& where, size_t off,
                     const std::string& what) {
  if (bad_at != nullptr) *bad_at = off;
  return Status::Corruption("image " + where + ": header field at file offset " +
                            std::to_string(off) + ": " + what +
                            "; the file is damaged or not a pagewise image");
}
}  // namespace

std::vector<uint8_t> EncodeHeader(const Header& h) {
  std::vector<uint8_t> b(kHeaderSize, 0);
  std::memcpy(b.data() + kOffMagic, kMagic, 8);
  StoreLe32(&b[kOffVersion], h.version);
  StoreLe32(&b[kOffHeaderSize], kHeaderSize);
  StoreLe32(&b[kOffIncompat], h.incompat_flags);
  StoreLe32(&b[kOffCompat], h.compat_flags);
  StoreLe32(&b[kOffPageSize], h.page_size);
  StoreLe32(&b[kOffRegionCount], h.region_count);
  StoreLe64(&b[kOffFileSize], h.file_size);
  StoreLe64(&b[kOffIndexOffset], h.index_offset);
  StoreLe64(&b[kOffIndexLength], h.index_length);
  StoreLe64(&b[kOffIndexChecksum], h.index_checksum);
  std::memcpy(&b[kOffUuid], h.uuid.data(), 16);
  std::memcpy(&b[kOffParentUuid], h.parent_uuid.data(), 16);
  StoreLe64(&b[kOffStatPages], h.stat_pages);
  StoreLe64(&b[kOffStatZero], h.stat_zero_pages);
  StoreLe64(&b[kOffStatDup], h.stat_duplicate_pages);
  StoreLe64(&b[kOffStatStored], h.stat_stored_pages);
  StoreLe64(&b[kOffStatRaw], h.stat_raw_bytes);
  StoreLe64(&b[kOffStatCompressed], h.stat_compressed_bytes);
  StoreLe64(&b[kOffChunkCount], h.chunk_count);
  StoreLe64(&b[kOffRunCount], h.run_count);
  b[kOffCompression] = h.compression;
  StoreLe64(&b[kOffHeaderChecksum], Checksum64(b.data(), kOffHeaderChecksum));
  return b;
}

Result<Header> DecodeHeader(const uint8_t* buf, size_t buf_len, uint64_t file_size,
                            const std::string& where, uint64_t* bad_at) {
  uint64_t unused_at;
  if (bad_at == nullptr) bad_at = &unused_at;
  *bad_at = file_size;  // truncation and size errors point at the end
  if (file_size < kMinHeaderSize || buf_len < kMinHeaderSize) {
    return Status::Corruption("image " + where + ": file is " + std::to_string(file_size) +
                              " bytes, too small to be a pagewise image (truncated?)");
  }
  if (std::memcmp(buf, kMagic, 8) != 0) {
    *bad_at = 0;
    return Status::Corruption("image " + where +
                              ": bad magic at file offset 0: not a pagewise image "
                              "(or its first bytes are damaged)");
  }
  Header h;
  h.header_size = LoadLe32(buf + kOffHeaderSize);
  if (h.header_size < kMinHeaderSize || h.header_size > kMaxHeaderSize || h.header_size % 8 != 0) {
    return HeaderCorrupt(bad_at, where, kOffHeaderSize,
                         "impossible header size " + std::to_string(h.header_size));
  }
  if (h.header_size > file_size || h.header_size > buf_len) {
    return Status::Corruption("image " + where + ": file is " + std::to_string(file_size) +
                              " bytes, shorter than its " + std::to_string(h.header_size) +
                              "-byte header (truncated)");
  }
  const size_t ck_off = h.header_size - 8;
  const uint64_t want = LoadLe64(buf + ck_off);
  const uint64_t got = Checksum64(buf, ck_off);
  if (want != got) {
    return HeaderCorrupt(bad_at, where, ck_off, "header checksum mismatch");
  }
  h.version = LoadLe32(buf + kOffVersion);
  if (h.version != kVersion) {
    *bad_at = kOffVersion;
    return Status::NotSupported(
        "image " + where + " has format version " + std::to_string(h.version) +
        "; this pagewise reads format version " + std::to_string(kVersion) + " only: " +
        (h.version > kVersion ? "use a newer pagewise to read it"
                              : "convert it with the pagewise that wrote it"));
  }
  if (h.header_size != kHeaderSize) {
    return HeaderCorrupt(bad_at, where, kOffHeaderSize,
                         "version 1 header size must be 256, is " + std::to_string(h.header_size));
  }
  h.incompat_flags = LoadLe32(buf + kOffIncompat);
  h.compat_flags = LoadLe32(buf + kOffCompat);
  if (h.incompat_flags != 0) {
    *bad_at = kOffIncompat;
    return Status::NotSupported("image " + where + " uses incompatible feature flags " +
                                HexAddr(h.incompat_flags) +
                                " that this pagewise does not know: use a newer pagewise");
  }
  h.page_size = LoadLe32(buf + kOffPageSize);
  h.region_count = LoadLe32(buf + kOffRegionCount);
  h.file_size = LoadLe64(buf + kOffFileSize);
  h.index_offset = LoadLe64(buf + kOffIndexOffset);
  h.index_length = LoadLe64(buf + kOffIndexLength);
  h.index_checksum = LoadLe64(buf + kOffIndexChecksum);
  std::memcpy(h.uuid.data(), buf + kOffUuid, 16);
  std::memcpy(h.parent_uuid.data(), buf + kOffParentUuid, 16);
  h.stat_pages = LoadLe64(buf + kOffStatPages);
  h.stat_zero_pages = LoadLe64(buf + kOffStatZero);
  h.stat_duplicate_pages = LoadLe64(buf + kOffStatDup);
  h.stat_stored_pages = LoadLe64(buf + kOffStatStored);
  h.stat_raw_bytes = LoadLe64(buf + kOffStatRaw);
  h.stat_compressed_bytes = LoadLe64(buf + kOffStatCompressed);
  h.chunk_count = LoadLe64(buf + kOffChunkCount);
  h.run_count = LoadLe64(buf + kOffRunCount);
  h.compression = buf[kOffCompression];

  if (h.file_size != file_size) {
    *bad_at = kOffFileSize;
    return Status::Corruption("image " + where + ": file is " + std::to_string(file_size) +
                              " bytes but its header says " + std::to_string(h.file_size) +
                              " (truncated or appended to)");
  }
  if (h.page_size != 0 &&
      (!IsPow2(h.page_size) || h.page_size < kMinPageSize || h.page_size > kMaxPageSize)) {
    return HeaderCorrupt(bad_at, where, kOffPageSize,
                         "bad page size " + std::to_string(h.page_size));
  }
  if (h.index_offset < kHeaderSize || h.index_length < kIndexFixedBytes ||
      h.index_offset > file_size || h.index_length != file_size - h.index_offset) {
    return HeaderCorrupt(bad_at, where, kOffIndexOffset,
                         "index [" + std::to_string(h.index_offset) + ", +" +
                             std::to_string(h.index_length) + ") does not end the file");
  }
  if (h.compression > static_cast<uint8_t>(Compression::kLz4)) {
    return HeaderCorrupt(bad_at, where, kOffCompression,
                         "unknown compression " + std::to_string(h.compression));
  }
  if (IsNullUuid(h.uuid)) return HeaderCorrupt(bad_at, where, kOffUuid, "null image identity");
  // Bound counts by the bytes that must hold them.
  if (h.region_count > h.index_length / kRegionFixedBytes ||
      h.chunk_count > h.index_length / kChunkEntryBytes ||
      h.run_count > h.index_length / kRunFixedBytes) {
    return HeaderCorrupt(bad_at, where, kOffRegionCount, "counts do not fit in the index");
  }
  return h;
}

Status ValidateRegion(const Region& r) {
  if (!IsPow2(r.page_size) || r.page_size < kMinPageSize) {
    return Status::InvalidArgument("region '" + r.name + "': page size " +
                                   std::to_string(r.page_size) + " is not a power of two >= 512");
  }
  if (r.page_size > kMaxPageSize) {
    return Status::NotSupported("region '" + r.name + "': page size " +
                                std::to_string(r.page_size) +
                                " exceeds the image format v1 limit of 16 MiB");
  }
  if (r.length % r.page_size != 0) {
    return Status::InvalidArgument("region '" + r.name + "': length " + std::to_string(r.length) +
                                   " is not a multiple of its page size " +
                                   std::to_string(r.page_size));
  }
  if (r.name.size() > kMaxStringBytes) {
    return Status::InvalidArgument("region name longer than 4096 bytes");
  }
  if (r.offset > (uint64_t{1} << 62) || r.length > (uint64_t{1} << 62)) {
    return Status::InvalidArgument("region '" + r.name + "': offset/length beyond 2^62");
  }
  return Status::Ok();
}

}  // namespace pagewise::image
