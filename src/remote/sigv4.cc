// SigV4: canonical request, string to sign, derived signing key, signature.
#include "remote/sigv4.h"

#include <algorithm>
#include <cctype>
#include <ctime>

#include "remote/crypto.h"

namespace pagewise::remote {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Header values are trimmed and runs of spaces collapse to one.
std::string TrimValue(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::string CanonicalQuery(const HeaderList& query) {
  std::vector<std::pair<std::string, std::string>> enc;
  enc.reserve(query.size());
  for (const auto& [k, v] : query) enc.emplace_back(UriEncode(k, true), UriEncode(v, true));
  std::sort(enc.begin(), enc.end());
  std::string out;
  for (const auto& [k, v] : enc) {
    if (!out.empty()) out += '&';
    out += k + "=" + v;
  }
  return out;
}

struct Canonical {
  std::string headers;         // "name:value\n" lines
  std::string signed_headers;  // "a;b;c"
};

Canonical CanonicalHeaders(const HeaderList& headers) {
  std::vector<std::pair<std::string, std::string>> h;
  for (const auto& [k, v] : headers) h.emplace_back(Lower(k), TrimValue(v));
  std::stable_sort(h.begin(), h.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  Canonical c;
  for (size_t i = 0; i < h.size(); ++i) {
    if (i > 0 && h[i].first == h[i - 1].first) {
      c.headers.back() = ',';  // same name again: values joined by commas
      c.headers += h[i].second + "\n";
      continue;
    }
    if (!c.signed_headers.empty()) c.signed_headers += ';';
    c.signed_headers += h[i].first;
    c.headers += h[i].first + ":" + h[i].second + "\n";
  }
  return c;
}

std::string Scope(const SigningInput& in) {
  return in.amz_date.substr(0, 8) + "/" + in.region + "/" + in.service + "/aws4_request";
}

std::string SignatureOf(const SigningInput& in, const Credentials& creds,
                        const std::string& string_to_sign) {
  const std::string date = in.amz_date.substr(0, 8);
  auto step = [](const Sha256Digest& key, std::string_view msg) {
    return HmacSha256(std::string_view(reinterpret_cast<const char*>(key.data()), key.size()), msg);
  };
  Sha256Digest k = HmacSha256("AWS4" + creds.secret_access_key, date);
  k = step(k, in.region);
  k = step(k, in.service);
  k = step(k, "aws4_request");
  return HexLower(step(k, string_to_sign));
}

std::string StringToSign(const SigningInput& in, const std::string& canonical_request) {
  return "AWS4-HMAC-SHA256\n" + in.amz_date + "\n" + Scope(in) + "\n" +
         HexLower(Sha256(canonical_request));
}

}  // namespace

std::string UriEncode(std::string_view s, bool encode_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (c == '/' && !encode_slash)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

std::string AmzDate(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[20];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

Signed SignV4(const SigningInput& in, const Credentials& creds) {
  Signed out;
  out.headers.emplace_back("x-amz-date", in.amz_date);
  if (!creds.session_token.empty()) {
    out.headers.emplace_back("x-amz-security-token", creds.session_token);
  }
  HeaderList all = in.headers;
  all.emplace_back("host", in.host);
  all.insert(all.end(), out.headers.begin(), out.headers.end());
  const Canonical ch = CanonicalHeaders(all);
  out.canonical_request = in.method + "\n" + in.path + "\n" + CanonicalQuery(in.query) + "\n" +
                          ch.headers + "\n" + ch.signed_headers + "\n" + in.payload_hash;
  out.string_to_sign = StringToSign(in, out.canonical_request);
  out.signature = SignatureOf(in, creds, out.string_to_sign);
  out.headers.emplace_back(
      "Authorization", "AWS4-HMAC-SHA256 Credential=" + creds.access_key_id + "/" + Scope(in) +
                           ", SignedHeaders=" + ch.signed_headers + ", Signature=" + out.signature);
  return out;
}

std::string PresignV4Query(const SigningInput& in, const Credentials& creds,
                           uint32_t expires_seconds) {
  HeaderList q = in.query;
  q.emplace_back("X-Amz-Algorithm", "AWS4-HMAC-SHA256");
  q.emplace_back("X-Amz-Credential", creds.access_key_id + "/" + Scope(in));
  q.emplace_back("X-Amz-Date", in.amz_date);
  q.emplace_back("X-Amz-Expires", std::to_string(expires_seconds));
  if (!creds.session_token.empty()) q.emplace_back("X-Amz-Security-Token", creds.session_token);
  q.emplace_back("X-Amz-SignedHeaders", "host");
  const std::string query = CanonicalQuery(q);
  const std::string canonical = in.method + "\n" + in.path + "\n" + query + "\nhost:" + in.host +
                                "\n\nhost\nUNSIGNED-PAYLOAD";
  const std::string signature = SignatureOf(in, creds, StringToSign(in, canonical));
  return query + "&X-Amz-Signature=" + signature;
}

}  // namespace pagewise::remote
