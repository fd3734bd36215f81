// SHA-256 and HMAC-SHA256 (OpenSSL libcrypto) and lower-case hex, for the
// S3 client's request signing (SigV4) and the content addresses of chunk
// objects.
//
// Thread safety: pure functions; safe from any thread.
#ifndef PAGEWISE_REMOTE_CRYPTO_H_
#define PAGEWISE_REMOTE_CRYPTO_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/bytes.h"

namespace pagewise::remote {

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest Sha256(const void* data, size_t len);
inline Sha256Digest Sha256(std::string_view s) { return Sha256(s.data(), s.size()); }
Sha256Digest HmacSha256(std::string_view key, std::string_view msg);

// Lower-case hex of a digest (base/bytes.h's HexBytes).
inline std::string HexLower(const Sha256Digest& d) { return HexBytes(d.data(), d.size()); }
// Parses 64 hex digits into *out; false if `hex` is anything else.
bool ParseSha256Hex(std::string_view hex, Sha256Digest* out);

// SHA-256 of the empty string, in hex (the payload hash of a bodiless request).
inline constexpr std::string_view kEmptySha256Hex =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_CRYPTO_H_
