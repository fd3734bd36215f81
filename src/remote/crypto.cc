// SHA-256 / HMAC-SHA256 through OpenSSL's one-shot functions.
#include "remote/crypto.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

namespace pagewise::remote {

Sha256Digest Sha256(const void* data, size_t len) {
  Sha256Digest d;
  SHA256(static_cast<const unsigned char*>(data), len, d.data());
  return d;
}

Sha256Digest HmacSha256(std::string_view key, std::string_view msg) {
  Sha256Digest d;
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), d.data(), &n);
  return d;
}

bool ParseSha256Hex(std::string_view hex, Sha256Digest* out) {
  if (hex.size() != 64) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace pagewise::remote
