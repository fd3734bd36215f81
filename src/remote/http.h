// HttpEngine: HTTP(S) transfers over libcurl's multi interface, on one
// thread of its own: several connections in parallel, kept alive and reused,
// demand requests ahead of prefetch and background ones.
//
// Scheduling: at most `connections` transfers run at once. Requests wait in
// one queue per ReadPriority and start highest priority first (FIFO within
// a priority); `reserved_for_demand` of the slots are never given to
// prefetch or background transfers, so a demand request never waits behind
// a full pipe of background ones.
//
// Transport: TCP_NODELAY, a connect timeout, a whole-transfer timeout per
// request, a low-speed abort (a stalled peer fails, not hangs); https
// verifies the peer's certificate and host name (curl's defaults, never
// turned off); no redirects are followed; only http and https are allowed.
// Transport failures are reported in the response (curl_code), never thrown.
//
// Descriptors: every socket lives in the fd table of the engine's thread,
// which Create starts on the calling thread: call Create on a thread that
// shares the process's table (not on a lazy restore's engine threads).
//
// Thread safety: Submit and Perform may be called from any thread, except
// from a completion callback (which runs on the engine's thread and must
// not block). The destructor cancels queued requests (their callbacks run
// with curl_code = CURLE_ABORTED_BY_CALLBACK) and waits for the thread.
#ifndef PAGEWISE_REMOTE_HTTP_H_
#define PAGEWISE_REMOTE_HTTP_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/restore.h"
#include "pagewise/status.h"
#include "remote/sigv4.h"

namespace pagewise::remote {

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, PUT, POST, DELETE
  std::string url;             // fully encoded
  HeaderList headers;
  // Request body (PUT/POST): must stay valid until the request completes.
  const uint8_t* body = nullptr;
  size_t body_len = 0;
  // The response body goes to `sink` (exactly sink_len bytes expected; more
  // is an error) when set, else into HttpResponse::body (at most max_body
  // bytes; more is an error).
  uint8_t* sink = nullptr;
  size_t sink_len = 0;
  size_t max_body = 64u << 20;
  std::chrono::milliseconds timeout{30000};  // the whole transfer
  ReadPriority priority = ReadPriority::kDemand;
};

struct HttpResponse {
  long status = 0;  // HTTP status, 0 when no response arrived
  std::vector<uint8_t> body;
  size_t body_len = 0;         // bytes received (into body or the sink)
  bool body_overflow = false;  // more bytes came than allowed (the transfer was cut)
  std::string etag;
  std::string content_range;  // "bytes 0-9/1234"
  int64_t content_length = -1;
  int curl_code = 0;       // CURLE_OK (0) when a response arrived
  std::string curl_error;  // curl's description of a transport failure
  bool transport_ok() const { return curl_code == 0; }
};

class HttpEngine {
 public:
  struct Options {
    int connections = 8;
    int reserved_for_demand = 2;
    std::chrono::milliseconds connect_timeout{5000};
  };
  // Starts the engine's thread. Errors: curl cannot be initialised.
  static Result<std::shared_ptr<HttpEngine>> Create(const Options& options);
  ~HttpEngine();
  HttpEngine(const HttpEngine&) = delete;
  HttpEngine& operator=(const HttpEngine&) = delete;

  // Queues `req`; `done` runs once on the engine's thread with the response.
  void Submit(HttpRequest req, std::function<void(HttpResponse&&)> done);
  // Submit and wait for the response.
  HttpResponse Perform(HttpRequest req);

  // Transfers started so far and bytes uploaded (request bodies), for stats.
  uint64_t requests_started() const;
  uint64_t bytes_sent() const;

  struct Impl;

 private:
  explicit HttpEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// Runs build() and the engine's Perform until `check` accepts the response
// or the deadline passes: `check` returns OK to accept, or an error and sets
// *transient to have it retried (transport failures, 5xx, throttling) after
// an exponential backoff (25 ms doubling to 1 s, jittered). Each attempt is
// rebuilt (a fresh signature) and gets the time left as its timeout. When
// the deadline passes: kTimeout "WHAT: timed out after N attempt(s) in T s;
// last error: ...". `cancel` (may be null) set to true stops the retries.
Result<HttpResponse> PerformWithRetries(
    HttpEngine* http, const std::function<HttpRequest()>& build,
    const std::function<Status(const HttpResponse&, bool* transient)>& check, Deadline deadline,
    const std::string& what, const std::atomic<bool>* cancel = nullptr);

// True for libcurl results worth retrying (refused, reset, timed out, cut).
bool TransientTransportError(int curl_code);

// Checks the reply to a plain-HTTP range request for [offset, offset+len)
// made with a sink of `len` bytes (a PerformWithRetries check): 206 with all
// the bytes (or 200 with exactly them from offset 0). 404 kNotFound, 403
// kPermissionDenied, 416 kCorruption (the file is shorter), a server that
// ignores ranges kNotSupported; 5xx, 429 and transport failures transient.
Status CheckRangeReply(const HttpResponse& r, uint64_t offset, size_t len, const std::string& what,
                       bool* transient);

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_HTTP_H_
