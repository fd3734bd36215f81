// HttpEngine: one thread driving a curl multi handle; per-priority queues.
#include "remote/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

namespace pagewise::remote {
namespace {

std::once_flag g_curl_init;
CURLcode g_curl_init_result = CURLE_OK;

struct Pending {
  HttpRequest req;
  std::function<void(HttpResponse&&)> done;
};

struct Active {
  CURL* easy = nullptr;
  Pending p;
  HttpResponse resp;
  curl_slist* headers = nullptr;
  size_t sent = 0;
  long status_seen = 0;  // from the status line, while the body arrives
  char error[CURL_ERROR_SIZE] = {};
};

size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  Active* a = static_cast<Active*>(user);
  const size_t len = size * n;
  HttpRequest& r = a->p.req;
  if (a->status_seen >= 300) {
    // An error reply (S3's XML) goes to `body` even for a sink request, so
    // that the caller can read the error code; 64 KiB of it is plenty.
    const size_t keep =
        std::min(len, (size_t{64} << 10) - std::min(a->resp.body.size(), size_t{64} << 10));
    a->resp.body.insert(a->resp.body.end(), data, data + keep);
    return len;
  }
  const size_t limit = r.sink != nullptr ? r.sink_len : r.max_body;
  if (a->resp.body_len + len > limit) {
    a->resp.body_overflow = true;
    return 0;  // curl fails the transfer with CURLE_WRITE_ERROR
  }
  if (r.sink != nullptr) {
    std::memcpy(r.sink + a->resp.body_len, data, len);
  } else {
    a->resp.body.insert(a->resp.body.end(), data, data + len);
  }
  a->resp.body_len += len;
  return len;
}

size_t OnRead(char* buf, size_t size, size_t n, void* user) {
  Active* a = static_cast<Active*>(user);
  const size_t want = std::min(size * n, a->p.req.body_len - a->sent);
  if (want > 0) std::memcpy(buf, a->p.req.body + a->sent, want);
  a->sent += want;
  return want;
}

std::string HeaderValue(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return {};
  for (size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return {};
  }
  std::string_view v = line.substr(name.size() + 1);
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) {
    v.remove_suffix(1);
  }
  return std::string(v);
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  Active* a = static_cast<Active*>(user);
  const std::string_view line(data, size * n);
  if (line.substr(0, 5) == "HTTP/") {
    // A new response (after a 100 Continue): forget headers of the last one.
    a->resp.etag.clear();
    a->resp.content_range.clear();
    a->resp.content_length = -1;
    const size_t sp = line.find(' ');
    a->status_seen =
        sp == std::string_view::npos ? 0 : std::strtol(line.data() + sp + 1, nullptr, 10);
  }
  std::string v = HeaderValue(line, "etag");
  if (!v.empty()) a->resp.etag = v;
  v = HeaderValue(line, "content-range");
  if (!v.empty()) a->resp.content_range = v;
  v = HeaderValue(line, "content-length");
  if (!v.empty()) a->resp.content_length = std::strtoll(v.c_str(), nullptr, 10);
  return size * n;
}

}  // namespace

struct HttpEngine::Impl {
  Options opt;
  CURLM* multi = nullptr;
  std::thread thread;
  std::mutex mu;
  std::deque<Pending> queues[3];  // by ReadPriority
  bool stop = false;
  std::vector<Active*> active;
  std::vector<CURL*> idle;  // reusable easy handles (connections live in the multi)
  int active_nondemand = 0;
  std::atomic<uint64_t> started{0};
  std::atomic<uint64_t> sent_bytes{0};

  ~Impl() {
    for (CURL* e : idle) curl_easy_cleanup(e);
    if (multi != nullptr) curl_multi_cleanup(multi);
  }

  void Start(Pending p) {
    Active* a = new Active();
    a->p = std::move(p);
    HttpRequest& r = a->p.req;
    if (idle.empty()) {
      a->easy = curl_easy_init();
    } else {
      a->easy = idle.back();
      idle.pop_back();
      curl_easy_reset(a->easy);
    }
    if (a->easy == nullptr) {
      a->resp.curl_code = CURLE_OUT_OF_MEMORY;
      a->resp.curl_error = "curl_easy_init failed";
      Finish(a, false);
      return;
    }
    CURL* e = a->easy;
    curl_easy_setopt(e, CURLOPT_URL, r.url.c_str());
    curl_easy_setopt(e, CURLOPT_PRIVATE, a);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opt.connect_timeout.count()));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(std::max<int64_t>(1, r.timeout.count())));
    // A peer that stops sending mid-transfer: abort after 10 s below 1 KiB/s.
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 10L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, a->error);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, OnWrite);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, a);
    if (r.method == "HEAD") {
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (r.method == "PUT") {
      curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(e, CURLOPT_READFUNCTION, OnRead);
      curl_easy_setopt(e, CURLOPT_READDATA, a);
      curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(r.body_len));
    } else if (r.method == "POST") {
      curl_easy_setopt(e, CURLOPT_POST, 1L);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, reinterpret_cast<const char*>(r.body));
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body_len));
    } else if (r.method != "GET") {
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
    for (const auto& [k, v] : r.headers) {
      a->headers = curl_slist_append(a->headers, (k + ": " + v).c_str());
    }
    // No "Expect: 100-continue" round trip before bodies.
    a->headers = curl_slist_append(a->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->headers);
    if (r.priority != ReadPriority::kDemand) active_nondemand++;
    active.push_back(a);
    started++;
    const CURLMcode mc = curl_multi_add_handle(multi, e);
    if (mc != CURLM_OK) {
      a->resp.curl_code = CURLE_FAILED_INIT;
      a->resp.curl_error = curl_multi_strerror(mc);
      Finish(a, false);
    }
  }

  // Completes `a`: callback, then the easy handle back to the pool.
  void Finish(Active* a, bool added) {
    if (added) curl_multi_remove_handle(multi, a->easy);
    if (a->p.req.priority != ReadPriority::kDemand) active_nondemand--;
    active.erase(std::remove(active.begin(), active.end(), a), active.end());
    if (a->resp.curl_code == CURLE_OK) {
      long code = 0;
      curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &code);
      a->resp.status = code;
    } else if (a->resp.curl_error.empty()) {
      a->resp.curl_error = a->error[0] != '\0'
                               ? a->error
                               : curl_easy_strerror(static_cast<CURLcode>(a->resp.curl_code));
    }
    sent_bytes += a->sent + (a->p.req.method == "POST" ? a->p.req.body_len : 0);
    if (a->easy != nullptr) idle.push_back(a->easy);
    if (a->headers != nullptr) curl_slist_free_all(a->headers);
    std::function<void(HttpResponse &&)> done = std::move(a->p.done);
    HttpResponse resp = std::move(a->resp);
    delete a;
    if (done) done(std::move(resp));
  }

  // Starts queued requests while slots are free. Caller holds no lock.
  void StartQueued() {
    while (true) {
      Pending p;
      {
        std::lock_guard<std::mutex> lk(mu);
        if (static_cast<int>(active.size()) >= opt.connections) return;
        const int nondemand_cap = std::max(1, opt.connections - opt.reserved_for_demand);
        int q = -1;
        if (!queues[0].empty()) {
          q = 0;
        } else if (active_nondemand < nondemand_cap) {
          q = !queues[1].empty() ? 1 : (!queues[2].empty() ? 2 : -1);
        }
        if (q < 0) return;
        p = std::move(queues[q].front());
        queues[q].pop_front();
      }
      Start(std::move(p));
    }
  }

  void Loop() {
    while (true) {
      {
        std::lock_guard<std::mutex> lk(mu);
        if (stop) break;
      }
      StartQueued();
      int running = 0;
      curl_multi_perform(multi, &running);
      int left = 0;
      while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
        if (m->msg != CURLMSG_DONE) continue;
        Active* a = nullptr;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &a);
        a->resp.curl_code = m->data.result;
        Finish(a, true);
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        if (stop) break;
        // Something to start right away: skip the wait.
        const bool startable = static_cast<int>(active.size()) < opt.connections &&
                               (!queues[0].empty() || !queues[1].empty() || !queues[2].empty());
        if (startable) continue;
      }
      curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
    }
    // Stopping: cancel everything still running or queued.
    while (!active.empty()) {
      Active* a = active.back();
      a->resp.curl_code = CURLE_ABORTED_BY_CALLBACK;
      a->resp.curl_error = "the HTTP engine was shut down";
      Finish(a, true);
    }
    for (auto& q : queues) {
      while (!q.empty()) {
        Pending p = std::move(q.front());
        q.pop_front();
        HttpResponse r;
        r.curl_code = CURLE_ABORTED_BY_CALLBACK;
        r.curl_error = "the HTTP engine was shut down";
        if (p.done) p.done(std::move(r));
      }
    }
  }
};

Result<std::shared_ptr<HttpEngine>> HttpEngine::Create(const Options& options) {
  std::call_once(g_curl_init, [] { g_curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (g_curl_init_result != CURLE_OK) {
    return Status::Internal(std::string("curl_global_init failed: ") +
                            curl_easy_strerror(g_curl_init_result));
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->opt.connections = std::clamp(options.connections, 1, 64);
  impl->opt.reserved_for_demand =
      std::clamp(options.reserved_for_demand, 0, impl->opt.connections - 1);
  impl->multi = curl_multi_init();
  if (impl->multi == nullptr) return Status::Internal("curl_multi_init failed");
  curl_multi_setopt(impl->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                    static_cast<long>(impl->opt.connections));
  curl_multi_setopt(impl->multi, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(impl->opt.connections * 2));
  std::shared_ptr<HttpEngine> engine(new HttpEngine(std::move(impl)));
  Impl* raw = engine->impl_.get();
  raw->thread = std::thread([raw] { raw->Loop(); });
  return engine;
}

HttpEngine::HttpEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpEngine::~HttpEngine() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stop = true;
  }
  curl_multi_wakeup(impl_->multi);
  if (impl_->thread.joinable()) impl_->thread.join();
}

void HttpEngine::Submit(HttpRequest req, std::function<void(HttpResponse&&)> done) {
  const int q = static_cast<int>(req.priority);
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    if (!impl_->stop) {
      impl_->queues[std::clamp(q, 0, 2)].push_back({std::move(req), std::move(done)});
      done = nullptr;
    }
  }
  if (done) {  // shut down already
    HttpResponse r;
    r.curl_code = CURLE_ABORTED_BY_CALLBACK;
    r.curl_error = "the HTTP engine was shut down";
    done(std::move(r));
    return;
  }
  curl_multi_wakeup(impl_->multi);
}

HttpResponse HttpEngine::Perform(HttpRequest req) {
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
  HttpResponse out;
  Submit(std::move(req), [&](HttpResponse&& r) {
    std::lock_guard<std::mutex> lk(mu);
    out = std::move(r);
    ready = true;
    cv.notify_one();
  });
  std::unique_lock<std::mutex> lk(mu);
  cv.wait(lk, [&] { return ready; });
  return out;
}

bool TransientTransportError(int code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

Status CheckRangeReply(const HttpResponse& r, uint64_t offset, size_t len, const std::string& what,
                       bool* transient) {
  *transient = false;
  if (!r.transport_ok()) {
    if (r.body_overflow) {
      return Status::NotSupported(what + ": the server sent more than the " + std::to_string(len) +
                                  " bytes asked for (it ignores range requests?)");
    }
    *transient = TransientTransportError(r.curl_code);
    return Status::IoError(what + ": " + r.curl_error);
  }
  const std::string status = "HTTP " + std::to_string(r.status);
  if (r.status == 206 || (r.status == 200 && offset == 0)) {
    if (r.body_len == len) return Status::Ok();
    if (r.status == 200) {
      return Status::Corruption(what + ": the file has " + std::to_string(r.body_len) +
                                " bytes, fewer than needed");
    }
    *transient = true;  // cut short
    return Status::IoError(what + ": short reply (" + std::to_string(r.body_len) + " of " +
                           std::to_string(len) + " bytes)");
  }
  if (r.status == 200) {
    return Status::NotSupported(what + ": the server ignores range requests (" + status + ")");
  }
  if (r.status == 404) return Status::NotFound(what + ": " + status + ": no such file");
  if (r.status == 401 || r.status == 403) {
    return Status(Code::kPermissionDenied, 0,
                  what + ": " + status + ": access denied (an expired presigned URL?)");
  }
  if (r.status == 416) {
    return Status::Corruption(what + ": " + status + ": the file is shorter than its index says");
  }
  *transient = r.status >= 500 || r.status == 429 || r.status == 408;
  return Status::IoError(what + ": " + status);
}

Result<HttpResponse> PerformWithRetries(
    HttpEngine* http, const std::function<HttpRequest()>& build,
    const std::function<Status(const HttpResponse&, bool* transient)>& check, Deadline deadline,
    const std::string& what, const std::atomic<bool>* cancel) {
  thread_local std::minstd_rand rng{std::random_device{}()};
  const Clock::time_point t0 = Clock::now();
  std::string last;
  for (int attempt = 0;; ++attempt) {
    HttpRequest req = build();
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    req.timeout = std::max(std::chrono::milliseconds(1), left);
    HttpResponse r = http->Perform(std::move(req));
    bool transient = false;
    Status s = check(r, &transient);
    if (s.ok()) return r;
    if (!transient) return s;
    last = s.message();
    const int64_t base = std::min<int64_t>(1000, int64_t{25} << std::min(attempt, 6));
    const auto pause =
        std::chrono::milliseconds(base / 2 + static_cast<int64_t>(rng() % (base / 2 + 1)));
    if (Clock::now() + pause >= deadline || (cancel != nullptr && cancel->load())) {
      char took[32];
      snprintf(took, sizeof(took), "%.1f s",
               std::chrono::duration<double>(Clock::now() - t0).count());
      return Status(Code::kTimeout, 0,
                    what + ": timed out after " + std::to_string(attempt + 1) + " attempt(s) in " +
                        took + "; last error: " + last);
    }
    // Sleep in slices so that a cancellation is seen within 10 ms.
    const Clock::time_point wake = Clock::now() + pause;
    while (Clock::now() < wake && !(cancel != nullptr && cancel->load())) {
      std::this_thread::sleep_for(
          std::min<Clock::duration>(std::chrono::milliseconds(10), wake - Clock::now()));
    }
  }
}

uint64_t HttpEngine::requests_started() const { return impl_->started.load(); }
uint64_t HttpEngine::bytes_sent() const { return impl_->sent_bytes.load(); }

}  // namespace pagewise::remote
