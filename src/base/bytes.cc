// The out-of-line part of base/bytes.h: hex text.
#include "base/bytes.h"

namespace pagewise {
namespace {
constexpr char kDigits[] = "0123456789abcdef";
}  // namespace

std::string HexBytes(const void* data, size_t len) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::string s(len * 2, '0');
  for (size_t i = 0; i < len; ++i) {
    s[2 * i] = kDigits[p[i] >> 4];
    s[2 * i + 1] = kDigits[p[i] & 15];
  }
  return s;
}

std::string HexAddr(uint64_t v) {
  char buf[18];  // 16 digits at most
  size_t n = sizeof(buf);
  do {
    buf[--n] = kDigits[v & 15];
    v >>= 4;
  } while (v != 0);
  return "0x" + std::string(buf + n, sizeof(buf) - n);
}

}  // namespace pagewise
