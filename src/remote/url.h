// Names of remote images and S3 endpoints: s3://BUCKET/KEY, http(s)://...
//
// Any name with "SCHEME://" in front is a URL; pagewise reads s3, http and
// https and refuses every other scheme (kInvalidArgument naming it), so a
// typo never falls back to a local path.
//
// Thread safety: pure functions over values.
#ifndef PAGEWISE_REMOTE_URL_H_
#define PAGEWISE_REMOTE_URL_H_

#include <string>
#include <string_view>

#include "pagewise/status.h"

namespace pagewise::remote {

enum class UrlScheme { kS3, kHttp, kHttps };

struct ObjectUrl {
  UrlScheme scheme = UrlScheme::kS3;
  std::string text;    // as given
  std::string bucket;  // s3
  std::string key;     // s3: object key (not encoded)
  // http(s): "http://host[:port]", the path as given (already encoded, may
  // be "/"), and the query without '?' (a presigned URL's signature).
  std::string origin;
  std::string path;
  std::string query;
};

// True if `name` starts with "SCHEME://" (letters, digits, + - . then "://").
bool IsUrl(std::string_view name);

// Parses an image URL. s3: the bucket must be a valid S3 bucket name (3-63
// of a-z 0-9 . -) and the key non-empty (and not end with '/'). http(s):
// a host and an absolute path. Errors: kInvalidArgument naming what is
// wrong (an unknown scheme lists the supported ones).
Result<ObjectUrl> ParseObjectUrl(std::string_view url);

// An S3 endpoint ("https://s3.eu-west-1.amazonaws.com", "http://127.0.0.1:7480").
struct Endpoint {
  bool https = true;
  std::string host;    // with ":port" when given
  std::string base;    // "http://host:port" (no trailing slash)
  bool local = false;  // 127.0.0.0/8, ::1 or localhost
};
// Errors: kInvalidArgument for anything but http(s)://HOST[:PORT][/].
Result<Endpoint> ParseEndpoint(std::string_view url);

// The URL of `relative` resolved against the directory of `base` (an
// http(s) URL): "http://h/a/top.img" + "base.img" -> "http://h/a/base.img".
// The query of `base` is not carried over.
std::string ResolveRelativeUrl(const ObjectUrl& base, std::string_view relative);

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_URL_H_
