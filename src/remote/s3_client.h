// S3Client: the S3 REST calls pagewise needs (GET with ranges, HEAD, PUT,
// multipart upload, ListObjectsV2, bucket creation for tests), signed with
// SigV4, over an HttpEngine, with retries.
//
// Retries: a transport failure (refused, reset, timed out), HTTP 5xx, 429
// or S3's SlowDown/RequestTimeout is retried with exponential backoff (25 ms
// doubling to 1 s, jittered) until the call's deadline; everything else
// fails at once. Errors name the operation, the s3:// object and the
// endpoint, the HTTP status and S3's error code, and what to check; never a
// key, a signature or a token. Codes: 403 -> kPermissionDenied, NoSuchBucket
// and NoSuchKey -> kNotFound, a deadline that passed -> kTimeout, others
// kIoError.
//
// Thread safety: every method is safe from any number of threads.
#ifndef PAGEWISE_REMOTE_S3_CLIENT_H_
#define PAGEWISE_REMOTE_S3_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/status.h"
#include "remote/aws_config.h"
#include "remote/http.h"

namespace pagewise::remote {

class S3Client {
 public:
  S3Client(S3Config config, std::shared_ptr<HttpEngine> http);

  const S3Config& config() const { return config_; }
  HttpEngine* http() const { return http_.get(); }

  // GET bytes [offset, offset+len) of the object into dst (len > 0; exactly
  // len bytes must come back). kNotFound for a missing object or bucket.
  // `cancel` (may be null) set to true stops retrying.
  Status GetRange(const std::string& bucket, const std::string& key, uint64_t offset, size_t len,
                  uint8_t* dst, ReadPriority priority, Deadline deadline,
                  const std::atomic<bool>* cancel = nullptr) const;
  // GET the whole object (at most max_bytes, else kCorruption naming the size).
  Result<std::vector<uint8_t>> GetObject(const std::string& bucket, const std::string& key,
                                         size_t max_bytes, ReadPriority priority,
                                         Deadline deadline) const;
  // HEAD: the object's size, or -1 if it does not exist (NoSuchKey). A
  // missing bucket is kNotFound.
  Result<int64_t> HeadObject(const std::string& bucket, const std::string& key,
                             Deadline deadline) const;
  // PUT of `len` bytes whose SHA-256 is `sha256_hex` (signed payload).
  Status PutObject(const std::string& bucket, const std::string& key, const uint8_t* data,
                   size_t len, const std::string& sha256_hex, Deadline deadline) const;
  // Multipart upload of `len` bytes in parts of part_size (>= 5 MiB except
  // the last): create, upload the parts (in parallel), complete; aborts the
  // upload on any failure.
  Status PutObjectMultipart(const std::string& bucket, const std::string& key, const uint8_t* data,
                            size_t len, size_t part_size, Deadline deadline) const;
  // Every key under `prefix` (ListObjectsV2, 1000 a page), at most
  // max_pages pages; *complete says whether the listing ended.
  Result<std::vector<std::string>> ListKeys(const std::string& bucket, const std::string& prefix,
                                            size_t max_pages, bool* complete,
                                            Deadline deadline) const;
  // Tests and benchmarks: PUT BUCKET (OK if it exists and is ours), DELETE object.
  Status CreateBucket(const std::string& bucket, Deadline deadline) const;
  Status DeleteObject(const std::string& bucket, const std::string& key, Deadline deadline) const;

  // "s3://bucket/key at ENDPOINT" for messages.
  std::string Describe(const std::string& bucket, const std::string& key) const;

 private:
  struct Call {
    std::string method;
    std::string bucket;
    std::string key;  // may be empty (bucket operations)
    HeaderList query;
    HeaderList headers;
    const uint8_t* body = nullptr;
    size_t body_len = 0;
    std::string payload_hash;  // "" : UNSIGNED-PAYLOAD
    uint8_t* sink = nullptr;
    size_t sink_len = 0;
    size_t max_body = 1u << 20;
    ReadPriority priority = ReadPriority::kDemand;
    const char* what = "";  // "GET", "PUT", ... for messages
  };
  // Runs `call` with retries until `deadline`. Returns the final response
  // when it is a 2xx; else the error Status.
  Result<HttpResponse> Execute(const Call& call, Deadline deadline,
                               const std::atomic<bool>* cancel = nullptr) const;
  HttpRequest Build(const Call& call) const;
  Status ErrorFor(const Call& call, const HttpResponse& r) const;

  S3Config config_;
  std::shared_ptr<HttpEngine> http_;
};

// The text of the first <tag>...</tag> in `xml` (entities decoded), or "".
std::string XmlTag(std::string_view xml, std::string_view tag);
// Every <tag>...</tag> in order.
std::vector<std::string> XmlTags(std::string_view xml, std::string_view tag);

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_S3_CLIENT_H_
