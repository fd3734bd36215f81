// S3Client: request building, signing, retries and error mapping.
#include "remote/s3_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "remote/crypto.h"

namespace pagewise::remote {
namespace {

std::string DecodeEntities(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    static const std::pair<std::string_view, char> kEnt[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    bool matched = false;
    for (const auto& [e, c] : kEnt) {
      if (s.substr(i, e.size()) == e) {
        out.push_back(c);
        i += e.size() - 1;
        matched = true;
        break;
      }
    }
    if (!matched) out.push_back('&');
  }
  return out;
}

bool TransientHttp(const HttpResponse& r) {
  if (r.status >= 500 || r.status == 429 || r.status == 408) return true;
  if (r.status == 400 || r.status == 503) {
    const std::string_view body(reinterpret_cast<const char*>(r.body.data()), r.body.size());
    const std::string code = XmlTag(body, "Code");
    return code == "RequestTimeout" || code == "SlowDown";
  }
  return false;
}

}  // namespace

std::string XmlTag(std::string_view xml, std::string_view tag) {
  const std::string open = "<" + std::string(tag) + ">", close = "</" + std::string(tag) + ">";
  const size_t a = xml.find(open);
  if (a == std::string_view::npos) return {};
  const size_t b = xml.find(close, a + open.size());
  if (b == std::string_view::npos) return {};
  return DecodeEntities(xml.substr(a + open.size(), b - a - open.size()));
}

std::vector<std::string> XmlTags(std::string_view xml, std::string_view tag) {
  std::vector<std::string> out;
  const std::string open = "<" + std::string(tag) + ">", close = "</" + std::string(tag) + ">";
  size_t pos = 0;
  while (true) {
    const size_t a = xml.find(open, pos);
    if (a == std::string_view::npos) break;
    const size_t b = xml.find(close, a + open.size());
    if (b == std::string_view::npos) break;
    out.push_back(DecodeEntities(xml.substr(a + open.size(), b - a - open.size())));
    pos = b + close.size();
  }
  return out;
}

S3Client::S3Client(S3Config config, std::shared_ptr<HttpEngine> http)
    : config_(std::move(config)), http_(std::move(http)) {}

std::string S3Client::Describe(const std::string& bucket, const std::string& key) const {
  return "s3://" + bucket + (key.empty() ? "" : "/" + key) + " (endpoint " + config_.endpoint.base +
         ")";
}

HttpRequest S3Client::Build(const Call& call) const {
  SigningInput in;
  in.method = call.method;
  in.region = config_.region;
  in.service = "s3";
  const std::string key_path = call.key.empty() ? "" : "/" + UriEncode(call.key, false);
  std::string host = config_.endpoint.host;
  if (config_.path_style) {
    in.path = "/" + call.bucket + key_path;
  } else {
    host = call.bucket + "." + host;
    in.path = key_path.empty() ? "/" : key_path;
  }
  in.host = host;
  in.query = call.query;
  in.payload_hash = call.payload_hash.empty() ? "UNSIGNED-PAYLOAD" : call.payload_hash;
  in.headers = call.headers;
  in.headers.emplace_back("x-amz-content-sha256", in.payload_hash);
  in.amz_date = AmzDate(std::chrono::system_clock::now());
  HttpRequest r;
  r.method = call.method;
  // The query string in the URL in the canonical (sorted, encoded) form.
  std::vector<std::pair<std::string, std::string>> q;
  for (const auto& [k, v] : call.query) q.emplace_back(UriEncode(k, true), UriEncode(v, true));
  std::sort(q.begin(), q.end());
  std::string qs;
  for (const auto& [k, v] : q) qs += (qs.empty() ? "?" : "&") + k + (v.empty() ? "=" : "=" + v);
  r.url = std::string(config_.endpoint.https ? "https://" : "http://") + host + in.path + qs;
  r.headers = in.headers;
  if (!config_.credentials.empty()) {
    const Signed s = SignV4(in, config_.credentials);
    r.headers.insert(r.headers.end(), s.headers.begin(), s.headers.end());
  }
  r.body = call.body;
  r.body_len = call.body_len;
  r.sink = call.sink;
  r.sink_len = call.sink_len;
  r.max_body = call.max_body;
  r.priority = call.priority;
  return r;
}

Status S3Client::ErrorFor(const Call& call, const HttpResponse& r) const {
  const std::string where = "S3 " + std::string(call.what) + " " + Describe(call.bucket, call.key);
  // Error bodies of ranged GETs land in the sink: only trust `body`.
  const std::string_view body(reinterpret_cast<const char*>(r.body.data()), r.body.size());
  std::string code = XmlTag(body, "Code");
  const std::string msg = XmlTag(body, "Message");
  if (code.empty() && call.method == "HEAD") code = r.status == 404 ? "NotFound" : "";
  const std::string detail = "HTTP " + std::to_string(r.status) + (code.empty() ? "" : " " + code) +
                             (msg.empty() ? "" : " (" + msg + ")");
  if (r.status == 403 || r.status == 401) {
    std::string hint;
    if (code == "InvalidAccessKeyId") {
      hint = "the server does not know this access key";
    } else if (code == "SignatureDoesNotMatch") {
      hint = "the secret key does not match the access key";
    } else {
      hint = "access denied";
    }
    return Status(Code::kPermissionDenied, 0,
                  where + ": " + detail + ": " + hint + "; check the keys (credentials from " +
                      config_.credentials_from + ") and the bucket's permissions");
  }
  if (code == "NoSuchBucket") {
    return Status::NotFound(where + ": bucket '" + call.bucket +
                            "' does not exist at this endpoint (create it, or check the name, "
                            "--endpoint and AWS_ENDPOINT_URL)");
  }
  if (r.status == 404) return Status::NotFound(where + ": " + detail + ": no such object");
  if (code == "PermanentRedirect" || r.status == 301) {
    return Status::InvalidArgument(where + ": " + detail +
                                   ": the bucket lives in another region; set AWS_REGION or the "
                                   "profile's region");
  }
  return Status::IoError(where + ": " + detail);
}

Result<HttpResponse> S3Client::Execute(const Call& call, Deadline deadline,
                                       const std::atomic<bool>* cancel) const {
  const std::string what = "S3 " + std::string(call.what) + " " + Describe(call.bucket, call.key);
  auto check = [&](const HttpResponse& r, bool* transient) -> Status {
    *transient = false;
    if (!r.transport_ok()) {
      if (r.body_overflow) {
        return Status::Corruption(what + ": the reply is longer than " +
                                  std::to_string(call.sink ? call.sink_len : call.max_body) +
                                  " bytes (the object is not what its reference says)");
      }
      *transient = TransientTransportError(r.curl_code);
      return Status::IoError(what + ": " + r.curl_error +
                             (*transient ? " (is the S3 server up and reachable?)" : ""));
    }
    if (r.status >= 200 && r.status < 300) {
      if (call.sink != nullptr && r.body_len != call.sink_len) {
        *transient = true;  // a short body: the connection was cut
        return Status::IoError(what + ": short reply (" + std::to_string(r.body_len) + " of " +
                               std::to_string(call.sink_len) + " bytes)");
      }
      return Status::Ok();
    }
    *transient = TransientHttp(r);
    return ErrorFor(call, r);
  };
  return PerformWithRetries(
      http_.get(), [&] { return Build(call); }, check, deadline, what, cancel);
}

Status S3Client::GetRange(const std::string& bucket, const std::string& key, uint64_t offset,
                          size_t len, uint8_t* dst, ReadPriority priority, Deadline deadline,
                          const std::atomic<bool>* cancel) const {
  Call c;
  c.method = "GET";
  c.what = "GET";
  c.bucket = bucket;
  c.key = key;
  c.headers = {
      {"Range", "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + len - 1)}};
  c.sink = dst;
  c.sink_len = len;
  c.priority = priority;
  PW_ASSIGN_OR_RETURN(HttpResponse r, Execute(c, deadline, cancel));
  (void)r;
  return Status::Ok();
}

Result<std::vector<uint8_t>> S3Client::GetObject(const std::string& bucket, const std::string& key,
                                                 size_t max_bytes, ReadPriority priority,
                                                 Deadline deadline) const {
  Call c;
  c.method = "GET";
  c.what = "GET";
  c.bucket = bucket;
  c.key = key;
  c.max_body = max_bytes;
  c.priority = priority;
  PW_ASSIGN_OR_RETURN(HttpResponse r, Execute(c, deadline));
  return std::move(r.body);
}

Result<int64_t> S3Client::HeadObject(const std::string& bucket, const std::string& key,
                                     Deadline deadline) const {
  Call c;
  c.method = "HEAD";
  c.what = "HEAD";
  c.bucket = bucket;
  c.key = key;
  Result<HttpResponse> r = Execute(c, deadline);
  if (!r.ok()) {
    // HEAD replies have no body: a 404 is a missing key unless the bucket
    // is missing, which a listing tells apart.
    if (r.status().code() != Code::kNotFound) return r.status();
    bool complete = false;
    Result<std::vector<std::string>> probe = ListKeys(bucket, key, 1, &complete, deadline);
    if (!probe.ok()) return probe.status();
    return int64_t{-1};
  }
  return r->content_length;
}

Status S3Client::PutObject(const std::string& bucket, const std::string& key, const uint8_t* data,
                           size_t len, const std::string& sha256_hex, Deadline deadline) const {
  Call c;
  c.method = "PUT";
  c.what = "PUT";
  c.bucket = bucket;
  c.key = key;
  c.body = data;
  c.body_len = len;
  c.payload_hash = sha256_hex;
  c.headers = {{"Content-Length", std::to_string(len)}};
  c.priority = ReadPriority::kBackground;
  PW_ASSIGN_OR_RETURN(HttpResponse r, Execute(c, deadline));
  (void)r;
  return Status::Ok();
}

Status S3Client::PutObjectMultipart(const std::string& bucket, const std::string& key,
                                    const uint8_t* data, size_t len, size_t part_size,
                                    Deadline deadline) const {
  part_size = std::max<size_t>(part_size, 5u << 20);
  Call create;
  create.method = "POST";
  create.what = "CreateMultipartUpload";
  create.bucket = bucket;
  create.key = key;
  create.query = {{"uploads", ""}};
  create.payload_hash = std::string(kEmptySha256Hex);
  PW_ASSIGN_OR_RETURN(HttpResponse cr, Execute(create, deadline));
  const std::string upload_id = XmlTag(
      std::string_view(reinterpret_cast<const char*>(cr.body.data()), cr.body.size()), "UploadId");
  if (upload_id.empty()) {
    return Status::IoError("S3 CreateMultipartUpload " + Describe(bucket, key) +
                           ": the reply has no UploadId");
  }
  const size_t parts = (len + part_size - 1) / part_size;
  std::vector<std::string> etags(parts);
  std::vector<Status> results(parts);
  // Parts in parallel: one thread per connection slot, each taking parts.
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < parts;) {
      const size_t off = i * part_size, n = std::min(part_size, len - off);
      Call p;
      p.method = "PUT";
      p.what = "UploadPart";
      p.bucket = bucket;
      p.key = key;
      p.query = {{"partNumber", std::to_string(i + 1)}, {"uploadId", upload_id}};
      p.body = data + off;
      p.body_len = n;
      p.payload_hash = HexLower(Sha256(data + off, n));
      p.headers = {{"Content-Length", std::to_string(n)}};
      p.priority = ReadPriority::kBackground;
      Result<HttpResponse> r = Execute(p, deadline);
      if (!r.ok()) {
        results[i] = r.status();
      } else if (r->etag.empty()) {
        results[i] = Status::IoError("S3 UploadPart " + Describe(bucket, key) + ": no ETag");
      } else {
        etags[i] = r->etag;
      }
    }
  };
  std::vector<std::thread> threads;
  const size_t nthreads = std::min<size_t>(parts, 4);
  for (size_t t = 0; t < nthreads; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  Status failed;
  for (const Status& s : results) {
    if (!s.ok()) {
      failed = s;
      break;
    }
  }
  std::string xml = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < parts; ++i) {
    xml += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>" + etags[i] +
           "</ETag></Part>";
  }
  xml += "</CompleteMultipartUpload>";
  if (failed.ok()) {
    Call done;
    done.method = "POST";
    done.what = "CompleteMultipartUpload";
    done.bucket = bucket;
    done.key = key;
    done.query = {{"uploadId", upload_id}};
    done.body = reinterpret_cast<const uint8_t*>(xml.data());
    done.body_len = xml.size();
    done.payload_hash = HexLower(Sha256(xml));
    Result<HttpResponse> r = Execute(done, deadline);
    if (r.ok()) {
      // S3 may answer 200 and still report an error in the body.
      const std::string_view body(reinterpret_cast<const char*>(r->body.data()), r->body.size());
      if (body.find("<Error>") == std::string_view::npos) return Status::Ok();
      failed = Status::IoError("S3 CompleteMultipartUpload " + Describe(bucket, key) + ": " +
                               XmlTag(body, "Code") + " " + XmlTag(body, "Message"));
    } else {
      failed = r.status();
    }
  }
  Call abort;
  abort.method = "DELETE";
  abort.what = "AbortMultipartUpload";
  abort.bucket = bucket;
  abort.key = key;
  abort.query = {{"uploadId", upload_id}};
  // Best effort: the upload's own error is what the caller needs.
  Result<HttpResponse> ar = Execute(abort, Clock::now() + std::chrono::seconds(5));
  (void)ar;
  return failed;
}

Result<std::vector<std::string>> S3Client::ListKeys(const std::string& bucket,
                                                    const std::string& prefix, size_t max_pages,
                                                    bool* complete, Deadline deadline) const {
  std::vector<std::string> keys;
  std::string token;
  *complete = false;
  for (size_t page = 0; page < max_pages; ++page) {
    Call c;
    c.method = "GET";
    c.what = "ListObjectsV2";
    c.bucket = bucket;
    c.query = {{"list-type", "2"}, {"prefix", prefix}, {"max-keys", "1000"}};
    if (!token.empty()) c.query.emplace_back("continuation-token", token);
    c.max_body = 16u << 20;
    c.priority = ReadPriority::kBackground;
    PW_ASSIGN_OR_RETURN(HttpResponse r, Execute(c, deadline));
    const std::string_view body(reinterpret_cast<const char*>(r.body.data()), r.body.size());
    for (std::string& k : XmlTags(body, "Key")) keys.push_back(std::move(k));
    if (XmlTag(body, "IsTruncated") != "true") {
      *complete = true;
      break;
    }
    token = XmlTag(body, "NextContinuationToken");
    if (token.empty()) break;
  }
  return keys;
}

Status S3Client::CreateBucket(const std::string& bucket, Deadline deadline) const {
  Call c;
  c.method = "PUT";
  c.what = "CreateBucket";
  c.bucket = bucket;
  c.payload_hash = std::string(kEmptySha256Hex);
  c.headers = {{"Content-Length", "0"}};
  Result<HttpResponse> r = Execute(c, deadline);
  if (!r.ok() && r.status().message().find("BucketAlreadyOwnedByYou") != std::string::npos) {
    return Status::Ok();
  }
  return r.ok() ? Status::Ok() : r.status();
}

Status S3Client::DeleteObject(const std::string& bucket, const std::string& key,
                              Deadline deadline) const {
  Call c;
  c.method = "DELETE";
  c.what = "DELETE";
  c.bucket = bucket;
  c.key = key;
  c.payload_hash = std::string(kEmptySha256Hex);
  Result<HttpResponse> r = Execute(c, deadline);
  return r.ok() ? Status::Ok() : r.status();
}

}  // namespace pagewise::remote
