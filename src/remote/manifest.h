// Layer manifests: how one layer of an image is described in object storage
// (docs/image-format.md, "Remote images"). A manifest carries the layer's
// header and index exactly as they are in the image file, plus the SHA-256
// of every chunk's stored bytes (the chunk objects' names), with a
// checksum over all of it. Chunk objects hold a chunk's stored bytes and
// nothing else.
//
// Object names in a bucket:
//   pagewise/chunks/<sha256 hex>   chunk objects, shared by every image
//   pagewise/layers/<uuid>         one manifest per layer (by identity)
//   NAME                           the manifest of an image's top layer
//
// Thread safety: pure functions over values.
#ifndef PAGEWISE_REMOTE_MANIFEST_H_
#define PAGEWISE_REMOTE_MANIFEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "image/format.h"
#include "pagewise/status.h"
#include "remote/crypto.h"

namespace pagewise::remote {

inline constexpr char kManifestMagic[8] = {'P', 'W', 'M', 'A', 'N', '\r', '\n', '\x1a'};
inline constexpr uint32_t kManifestVersion = 1;
inline constexpr size_t kManifestFixedBytes = 80;
inline constexpr size_t kMaxManifestBytes = size_t{1} << 30;
inline constexpr char kChunkPrefix[] = "pagewise/chunks/";
inline constexpr char kLayerPrefix[] = "pagewise/layers/";

struct Manifest {
  image::Uuid uuid{};
  image::Uuid parent_uuid{};
  uint64_t file_size = 0;            // of the layer's image file
  std::vector<uint8_t> header;       // header bytes as in the file
  std::vector<uint8_t> index;        // index bytes as in the file
  std::vector<Sha256Digest> chunks;  // SHA-256 of each chunk's stored bytes, by chunk id
};

std::vector<uint8_t> EncodeManifest(const Manifest& m);

// Decodes and checks a manifest object (`where` names it in messages):
// magic, version, flags, the sizes against the object's size (before
// anything is allocated), the checksum. The header and index inside are
// checked by the image reader (Layer::FromParts). kCorruption on damage,
// kNotSupported for another version.
Result<Manifest> DecodeManifest(const uint8_t* data, size_t len, const std::string& where);

inline std::string ChunkKey(const Sha256Digest& d) { return kChunkPrefix + HexLower(d); }
inline std::string LayerKey(const image::Uuid& u) { return kLayerPrefix + image::UuidString(u); }

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_MANIFEST_H_
