// Manifest encoding and checked decoding.
#include "remote/manifest.h"

#include <cstring>

#include "base/bytes.h"

namespace pagewise::remote {

std::vector<uint8_t> EncodeManifest(const Manifest& m) {
  std::vector<uint8_t> out(kManifestFixedBytes);
  uint8_t* p = out.data();
  std::memcpy(p, kManifestMagic, 8);
  StoreLe32(p + 8, kManifestVersion);
  StoreLe32(p + 12, 0);  // flags
  std::memcpy(p + 16, m.uuid.data(), 16);
  std::memcpy(p + 32, m.parent_uuid.data(), 16);
  StoreLe64(p + 48, m.file_size);
  StoreLe32(p + 56, static_cast<uint32_t>(m.header.size()));
  StoreLe32(p + 60, 0);
  StoreLe64(p + 64, m.index.size());
  StoreLe64(p + 72, m.chunks.size());
  out.insert(out.end(), m.header.begin(), m.header.end());
  out.insert(out.end(), m.index.begin(), m.index.end());
  for (const Sha256Digest& d : m.chunks) out.insert(out.end(), d.begin(), d.end());
  uint8_t sum[8];
  StoreLe64(sum, image::Checksum64(out.data(), out.size()));
  out.insert(out.end(), sum, sum + 8);
  return out;
}

Result<Manifest> DecodeManifest(const uint8_t* data, size_t len, const std::string& where) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("manifest " + where + ": " + why +
                              "; the object is damaged or not a pagewise manifest: push the "
                              "image again");
  };
  if (len < kManifestFixedBytes + 8 || std::memcmp(data, kManifestMagic, 8) != 0) {
    return bad("no manifest magic (" + std::to_string(len) + " bytes)");
  }
  const uint32_t version = LoadLe32(data + 8);
  if (image::Checksum64(data, len - 8) != LoadLe64(data + len - 8)) {
    return bad("checksum mismatch");
  }
  if (version != kManifestVersion) {
    return Status::NotSupported("manifest " + where + " has version " + std::to_string(version) +
                                "; this pagewise reads version " +
                                std::to_string(kManifestVersion) + " only");
  }
  if (LoadLe32(data + 12) != 0) return bad("unknown flags");
  Manifest m;
  std::memcpy(m.uuid.data(), data + 16, 16);
  std::memcpy(m.parent_uuid.data(), data + 32, 16);
  m.file_size = LoadLe64(data + 48);
  const uint64_t header_len = LoadLe32(data + 56);
  const uint64_t index_len = LoadLe64(data + 64);
  const uint64_t chunk_count = LoadLe64(data + 72);
  // Every size bounded by the object before anything is allocated.
  const uint64_t body = len - kManifestFixedBytes - 8;
  if (header_len > body || index_len > body - header_len ||
      chunk_count > (body - header_len - index_len) / 32 ||
      header_len + index_len + chunk_count * 32 != body) {
    return bad("sizes do not add up to the object's " + std::to_string(len) + " bytes");
  }
  const uint8_t* p = data + kManifestFixedBytes;
  m.header.assign(p, p + header_len);
  p += header_len;
  m.index.assign(p, p + index_len);
  p += index_len;
  m.chunks.resize(chunk_count);
  for (uint64_t i = 0; i < chunk_count; ++i, p += 32) std::memcpy(m.chunks[i].data(), p, 32);
  return m;
}

}  // namespace pagewise::remote
