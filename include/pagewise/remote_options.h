// RemoteOptions: how pagewise reaches images kept in S3-compatible object
// storage (s3://BUCKET/NAME) or behind plain HTTP(S) URLs, and where it
// caches their chunks. Part of ImageOpenOptions, PushOptions and PullOptions.
//
// Every field has a default that follows the AWS conventions, so most
// callers leave them alone:
//   endpoint  --endpoint / this field, else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,
//             `endpoint_url` of the profile in ~/.aws/config, else AWS's
//             https://s3.REGION.amazonaws.com
//   region    this field, else AWS_REGION, AWS_DEFAULT_REGION, the profile's
//             `region`, else us-east-1
//   keys      AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN),
//             else the profile in ~/.aws/credentials, then ~/.aws/config
//             (AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE move them); the
//             profile is this field, else AWS_PROFILE, else "default". No keys
//             at all: unsigned (anonymous) requests.
//   cache     PAGEWISE_CACHE_DIR, else $XDG_CACHE_HOME/pagewise, else
//             ~/.cache/pagewise; bounded by PAGEWISE_CACHE_BYTES (default 10 GiB)
//   timeout   PAGEWISE_REMOTE_TIMEOUT_MS (default 30000): how long one object may
//             take, retries included
// Credentials never appear in messages or logs.
//
// Thread safety: a plain value.
#ifndef PAGEWISE_REMOTE_OPTIONS_H_
#define PAGEWISE_REMOTE_OPTIONS_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "pagewise/export.h"
#include "pagewise/time.h"

namespace pagewise {
PAGEWISE_API_BEGIN

struct RemoteOptions {
  std::string endpoint;  // "": from the environment / profile (see above)
  std::string profile;   // "": AWS_PROFILE or "default"
  std::string region;    // "": from the environment / profile
  // Plain http:// is used only for an endpoint on this host (127.0.0.0/8,
  // ::1, localhost) unless this is set; https always checks certificates.
  bool allow_http = false;
  // The host's chunk cache directory ("": the default above). Shared safely
  // by every pagewise process that names the same directory.
  std::string cache_dir;
  uint64_t cache_bytes = 0;  // 0: PAGEWISE_CACHE_BYTES or 10 GiB
  // Verified chunks kept in this process's memory, shared by every image it
  // opens from the same store (0: none).
  uint64_t memory_cache_bytes = 64ull << 20;
  int connections = 8;  // parallel HTTP connections (1..64)
  // One object (a chunk, a manifest) may take this long, retries with
  // backoff included; then the read fails. 0: PAGEWISE_REMOTE_TIMEOUT_MS or 30 s.
  Duration timeout{0};
  // Connecting to the endpoint may take this long per attempt.
  Duration connect_timeout = std::chrono::seconds(5);
  // false: fetch every chunk from the store even when the cache has it (and
  // refresh the cache); VerifyImage does this to check the store's copy.
  bool cache_reads = true;
};

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_REMOTE_OPTIONS_H_
