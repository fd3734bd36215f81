// URL parsing for remote image names and endpoints.
#include "remote/url.h"

#include <cctype>

namespace pagewise::remote {
namespace {

bool ValidBucket(std::string_view b) {
  if (b.size() < 3 || b.size() > 63) return false;
  for (char c : b) {
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == '-')) {
      return false;
    }
  }
  return std::isalnum(static_cast<unsigned char>(b.front())) &&
         std::isalnum(static_cast<unsigned char>(b.back()));
}

bool IsLocalHost(std::string_view host) {
  // host may carry ":port" (or be "[::1]:port").
  if (host.substr(0, 5) == "[::1]") return true;
  const std::string_view name = host.substr(0, host.find(':'));
  return name == "localhost" || name.substr(0, 4) == "127.";
}

}  // namespace

bool IsUrl(std::string_view name) {
  const size_t p = name.find("://");
  if (p == std::string_view::npos || p == 0) return false;
  for (size_t i = 0; i < p; ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    if (!(std::isalnum(c) || c == '+' || c == '-' || c == '.')) return false;
  }
  return std::isalpha(static_cast<unsigned char>(name[0]));
}

Result<ObjectUrl> ParseObjectUrl(std::string_view url) {
  ObjectUrl u;
  u.text = std::string(url);
  const size_t p = url.find("://");
  if (!IsUrl(url)) {
    return Status::InvalidArgument("'" + u.text + "' is not a URL (SCHEME://...)");
  }
  std::string scheme(url.substr(0, p));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string_view rest = url.substr(p + 3);
  if (scheme == "s3") {
    u.scheme = UrlScheme::kS3;
    const size_t slash = rest.find('/');
    u.bucket = std::string(rest.substr(0, slash));
    if (!ValidBucket(u.bucket)) {
      return Status::InvalidArgument("'" + u.text + "': '" + u.bucket +
                                     "' is not a valid S3 bucket name (3-63 characters of "
                                     "a-z, 0-9, '.' and '-')");
    }
    if (slash == std::string_view::npos || slash + 1 >= rest.size()) {
      return Status::InvalidArgument("'" + u.text + "' names no object: write s3://BUCKET/NAME");
    }
    u.key = std::string(rest.substr(slash + 1));
    if (u.key.back() == '/' || u.key.size() > 1024) {
      return Status::InvalidArgument("'" + u.text +
                                     "': the object name must not end with '/' and is at most "
                                     "1024 bytes");
    }
    return u;
  }
  if (scheme == "http" || scheme == "https") {
    u.scheme = scheme == "http" ? UrlScheme::kHttp : UrlScheme::kHttps;
    const size_t slash = rest.find('/');
    const std::string_view host = rest.substr(0, slash);
    if (host.empty() || slash == std::string_view::npos) {
      return Status::InvalidArgument("'" + u.text + "': expected " + scheme + "://HOST/PATH");
    }
    u.origin = scheme + "://" + std::string(host);
    std::string_view path = rest.substr(slash);
    const size_t q = path.find('?');
    if (q != std::string_view::npos) {
      u.query = std::string(path.substr(q + 1));
      path = path.substr(0, q);
    }
    u.path = std::string(path.substr(0, path.find('#')));
    return u;
  }
  return Status::InvalidArgument("unknown URL scheme '" + scheme + "' in '" + u.text +
                                 "': pagewise reads images from s3://BUCKET/NAME, http:// and "
                                 "https:// URLs, or local paths");
}

Result<Endpoint> ParseEndpoint(std::string_view url) {
  Endpoint e;
  std::string_view rest;
  if (url.substr(0, 8) == "https://") {
    rest = url.substr(8);
  } else if (url.substr(0, 7) == "http://") {
    e.https = false;
    rest = url.substr(7);
  } else {
    return Status::InvalidArgument("S3 endpoint '" + std::string(url) +
                                   "' must start with https:// (or http:// for a local server)");
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty() || rest.find('/') != std::string_view::npos ||
      rest.find('?') != std::string_view::npos || rest.find('@') != std::string_view::npos) {
    return Status::InvalidArgument("S3 endpoint '" + std::string(url) +
                                   "' must be SCHEME://HOST[:PORT] without a path");
  }
  e.host = std::string(rest);
  e.base = std::string(e.https ? "https://" : "http://") + e.host;
  e.local = IsLocalHost(e.host);
  return e;
}

std::string ResolveRelativeUrl(const ObjectUrl& base, std::string_view relative) {
  if (!relative.empty() && relative.front() == '/') return base.origin + std::string(relative);
  const size_t slash = base.path.rfind('/');
  return base.origin + base.path.substr(0, slash + 1) + std::string(relative);
}

}  // namespace pagewise::remote
