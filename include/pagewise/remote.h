// Images in S3-compatible object storage: push a local image chain to a
// bucket, pull one back. Reading needs neither: Image::Open (and every
// command that reads an image) accepts s3://BUCKET/NAME and fetches chunks
// on demand through the host's chunk cache.
//
// Layout in the bucket (docs/image-format.md, "Remote images"): each chunk
// of page data is one object named by the SHA-256 of its stored bytes,
// pagewise/chunks/<hex>, stored once per bucket whatever image or layer
// uses it; each layer has a small manifest, pagewise/layers/<uuid> (its
// header and index as in the image file, the chunks' hashes, a checksum);
// NAME holds the manifest of the image's top layer. Objects are written
// chunks first, then layer manifests base first, then NAME, so a reader
// never finds a manifest whose chunks are missing.
//
// Endpoint, region and keys: RemoteOptions (pagewise/remote_options.h).
//
// Thread safety: the functions may be called from any thread; each call is
// independent.
#ifndef PAGEWISE_REMOTE_H_
#define PAGEWISE_REMOTE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/image.h"
#include "pagewise/remote_options.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

struct PushOptions {
  RemoteOptions remote;
  // Objects larger than this (manifests of huge images) are uploaded in
  // parts of part_bytes (S3 multipart upload; parts >= 5 MiB).
  uint64_t multipart_bytes = 64ull << 20;
  uint64_t part_bytes = 16ull << 20;
  ProgressFn progress;  // bytes of chunks hashed and uploaded (may be empty)
};

struct PushStats {
  uint64_t layers = 0;                   // layers in the chain
  uint64_t layers_uploaded = 0;          // layers whose manifest was new to the bucket
  uint64_t chunks = 0;                   // distinct chunks the new layers use
  uint64_t chunks_uploaded = 0;          // of those, not yet in the bucket
  uint64_t chunk_bytes_uploaded = 0;     // bytes of the uploaded chunks
  uint64_t manifest_bytes_uploaded = 0;  // bytes of uploaded manifests (and NAME)
  bool name_updated = false;             // NAME was written (it held something else)
  uint64_t bytes_uploaded() const { return chunk_bytes_uploaded + manifest_bytes_uploaded; }
};

// Uploads the chain at `image` (local path) to `url` (s3://BUCKET/NAME),
// skipping layers and chunks the bucket already has, in parallel. NAME is
// replaced only if it holds something else. Errors: `url` is not s3://
// (kInvalidArgument), the bucket does not exist (kNotFound), keys refused
// (kPermissionDenied), the image is damaged (kCorruption), the endpoint
// fails past the timeout (kTimeout). A failed push leaves NAME as it was;
// chunks it uploaded stay (harmless: they are content addressed).
Result<PushStats> PushImage(const std::string& image, const std::string& url,
                            const PushOptions& options = {});

struct PullOptions {
  RemoteOptions remote;
  ProgressFn progress;  // bytes of chunks written (may be empty)
};

struct PullStats {
  std::vector<std::string> files;  // written, top layer first
  uint64_t bytes = 0;              // bytes written
  // Where the chunks came from: the network, the host's chunk cache, or
  // another pagewise process that was fetching them at the same time.
  uint64_t chunks_fetched = 0;
  uint64_t chunks_cached = 0;
  uint64_t chunks_from_peer = 0;
};

// Downloads the image at `url` (s3://BUCKET/NAME) as a local chain: the top
// layer at `image`, its parents beside it as IMAGE.parent-1, IMAGE.parent-2,
// ... (each layer's recorded parent path names the next). Every layer is
// byte-for-byte the pushed file, except that a parent path that differs is
// rewritten (with the checksums it covers). Every chunk is verified; files
// appear by rename only when complete (existing ones are replaced), so a
// failed pull leaves no partial file. Errors as Image::Open, plus file
// system errors.
Result<PullStats> PullImage(const std::string& url, const std::string& image,
                            const PullOptions& options = {});

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_REMOTE_H_
