// Opening remote images with the image reader: s3://BUCKET/NAME (manifests
// and content-addressed chunk objects, docs/image-format.md "Remote
// images") and http(s):// URLs of image files (range requests). Each layer
// becomes an image::Layer whose ChunkSource fetches through the process's
// ChunkStore; image::ChainImage does the rest exactly as for local files.
//
// Thread safety: OpenRemoteChain may be called from any thread; the images
// are immutable (see image/chain.h).
#ifndef PAGEWISE_REMOTE_REMOTE_IMAGE_H_
#define PAGEWISE_REMOTE_REMOTE_IMAGE_H_

#include <memory>
#include <string>

#include "image/chain.h"
#include "pagewise/image.h"
#include "remote/chunk_store.h"
#include "remote/manifest.h"
#include "remote/s3_client.h"

namespace pagewise::remote {

// Opens the image at `url` and its parents. Errors: an unknown scheme or a
// malformed name (kInvalidArgument), a missing bucket or object (kNotFound),
// wrong keys (kPermissionDenied), an unreachable endpoint past the timeout
// (kTimeout), a damaged manifest or index (kCorruption, with *where set as
// for local images).
Result<std::unique_ptr<image::ChainImage>> OpenRemoteChain(const std::string& url,
                                                           const RemoteOptions& options, Env* env,
                                                           VerifyError* where);

// An S3 client for `options` (endpoint, region, keys resolved from the
// environment and profiles) over `store`'s connections.
Result<std::shared_ptr<S3Client>> MakeS3Client(const RemoteOptions& options,
                                               const std::shared_ptr<ChunkStore>& store,
                                               Env* env = nullptr);

// Fetches and decodes the manifest object bucket/key (deadline: the store's
// timeout).
Result<Manifest> FetchManifest(const S3Client& s3, const std::string& bucket,
                               const std::string& key, std::chrono::nanoseconds timeout);

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_REMOTE_IMAGE_H_
