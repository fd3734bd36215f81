// AWS Signature Version 4: signs S3 requests (Authorization header) and
// builds presigned URLs (signature in the query string).
//
// The caller gives the request as it will be sent: method, host (with
// ":port" when not the scheme's default), the URI-encoded path, the query
// parameters (raw: they are encoded here), the headers to sign besides
// host/x-amz-date/x-amz-security-token (which are added here), and the
// payload hash (hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"). S3 also
// wants the payload hash sent as x-amz-content-sha256 (RADOS Gateway refuses
// requests without it): the S3 client puts that header in `headers`.
//
// Secrets: the secret key is used only to derive the signing key; nothing
// here logs, and the Signed result holds no secret (the session token, which
// is sent as a header by design, excepted).
//
// Thread safety: pure functions; safe from any thread.
#ifndef PAGEWISE_REMOTE_SIGV4_H_
#define PAGEWISE_REMOTE_SIGV4_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pagewise::remote {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty: none
  bool empty() const { return access_key_id.empty() && secret_access_key.empty(); }
};

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct SigningInput {
  std::string method;  // "GET", "PUT", ...
  std::string host;    // Host header value
  std::string path;    // URI-encoded absolute path ("/bucket/key")
  HeaderList query;    // raw (not yet encoded) query parameters
  HeaderList headers;  // further headers to sign (any case; values as sent)
  std::string payload_hash;
  std::string amz_date;  // "YYYYMMDDTHHMMSSZ" (AmzDate())
  std::string region;    // "us-east-1"
  std::string service;   // "s3"
};

struct Signed {
  HeaderList headers;  // to send: x-amz-date, x-amz-security-token, Authorization
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;  // hex
};

// Signs `in` with `creds` (header-based authentication).
Signed SignV4(const SigningInput& in, const Credentials& creds);

// A presigned request: the query string (without '?', encoded, including
// X-Amz-Signature) that authorises `in` (only host signed, unsigned payload)
// for `expires_seconds` (1 .. 604800) from in.amz_date.
std::string PresignV4Query(const SigningInput& in, const Credentials& creds,
                           uint32_t expires_seconds);

// RFC 3986 encoding as SigV4 wants it: unreserved characters (A-Z a-z 0-9
// - . _ ~) as is, '/' as is unless encode_slash, every other byte %XX.
std::string UriEncode(std::string_view s, bool encode_slash);

// "YYYYMMDDTHHMMSSZ" (UTC) of `t`.
std::string AmzDate(std::chrono::system_clock::time_point t);

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_SIGV4_H_
