// C API: images in S3-compatible object storage (push, pull, and opening
// s3:// and http(s):// images and sources with explicit remote options).
#include <string>

#include "capi/capi_internal.h"
#include "pagewise/remote.h"

namespace pc = pagewise::capi;
using pagewise::Result;
using pagewise::Status;

namespace pagewise::capi {
namespace {

const char* Str(const char* s) { return s == nullptr ? "" : s; }

// The C options over the C++ defaults. Out of range: kInvalidArgument naming
// the field (never clamped).
Result<RemoteOptions> ToRemoteOptions(const pagewise_remote_options* o, const char* fn) {
  RemoteOptions r;
  if (o == nullptr) return r;
  const std::string where = std::string(fn) + ": pagewise_remote_options.";
  if (o->connections < 0 || o->connections > 64) {
    return Status::InvalidArgument(where + "connections is " + std::to_string(o->connections) +
                                   ": must be 1..64 (0: 8)");
  }
  if (o->timeout_ns < 0 || o->connect_timeout_ns < 0) {
    return Status::InvalidArgument(where +
                                   (o->timeout_ns < 0 ? "timeout_ns" : "connect_timeout_ns") +
                                   " is negative (0: the default)");
  }
  r.endpoint = Str(o->endpoint);
  r.profile = Str(o->profile);
  r.region = Str(o->region);
  r.allow_http = o->allow_http != 0;
  r.cache_dir = Str(o->cache_dir);
  r.cache_bytes = o->cache_bytes;
  if (o->memory_cache_bytes != 0) r.memory_cache_bytes = o->memory_cache_bytes;
  if (o->connections != 0) r.connections = o->connections;
  r.timeout = Duration(o->timeout_ns);
  if (o->connect_timeout_ns != 0) r.connect_timeout = Duration(o->connect_timeout_ns);
  return r;
}

int CheckArgs(const char* fn, const char* a, const char* b) {
  if (a == nullptr || b == nullptr) return InvalidArgument(std::string(fn) + ": NULL argument");
  return 0;
}

// The argument checks and Image::Open of both open functions; clears *out.
template <typename Handle>
Result<std::unique_ptr<Image>> OpenRemote(const char* fn, const char* url,
                                          const pagewise_remote_options* options, Handle** out) {
  if (out == nullptr || url == nullptr) {
    return Status::InvalidArgument(std::string(fn) + ": NULL argument");
  }
  *out = nullptr;
  PW_ASSIGN_OR_RETURN(RemoteOptions r, ToRemoteOptions(options, fn));
  ImageOpenOptions io;
  io.remote = std::move(r);
  return Image::Open(url, io);
}

}  // namespace
}  // namespace pagewise::capi

extern "C" {

int pagewise_push(const char* image, const char* url, const pagewise_remote_options* options,
                  pagewise_push_stats* stats) {
  return pc::Guard([&] {
    if (int rc = pc::CheckArgs("pagewise_push", image, url); rc != 0) return rc;
    Result<pagewise::RemoteOptions> r = pc::ToRemoteOptions(options, "pagewise_push");
    if (!r.ok()) return pc::SetError(r.status());
    pagewise::PushOptions o;
    o.remote = std::move(*r);
    Result<pagewise::PushStats> st = pagewise::PushImage(image, url, o);
    if (!st.ok()) return pc::SetError(st.status());
    if (stats != nullptr) {
      stats->layers = st->layers;
      stats->layers_uploaded = st->layers_uploaded;
      stats->chunks = st->chunks;
      stats->chunks_uploaded = st->chunks_uploaded;
      stats->chunk_bytes_uploaded = st->chunk_bytes_uploaded;
      stats->manifest_bytes_uploaded = st->manifest_bytes_uploaded;
      stats->name_updated = st->name_updated ? 1 : 0;
    }
    return 0;
  });
}

int pagewise_pull(const char* url, const char* image, const pagewise_remote_options* options,
                  pagewise_pull_stats* stats) {
  return pc::Guard([&] {
    if (int rc = pc::CheckArgs("pagewise_pull", url, image); rc != 0) return rc;
    Result<pagewise::RemoteOptions> r = pc::ToRemoteOptions(options, "pagewise_pull");
    if (!r.ok()) return pc::SetError(r.status());
    pagewise::PullOptions o;
    o.remote = std::move(*r);
    Result<pagewise::PullStats> st = pagewise::PullImage(url, image, o);
    if (!st.ok()) return pc::SetError(st.status());
    if (stats != nullptr) {
      stats->files = st->files.size();
      stats->bytes = st->bytes;
      stats->chunks_fetched = st->chunks_fetched;
      stats->chunks_cached = st->chunks_cached;
      stats->chunks_from_peer = st->chunks_from_peer;
    }
    return 0;
  });
}

int pagewise_image_open_remote(const char* url, const pagewise_remote_options* options,
                               pagewise_image** out) {
  return pc::Guard([&] {
    Result<std::unique_ptr<pagewise::Image>> img =
        pc::OpenRemote("pagewise_image_open_remote", url, options, out);
    if (!img.ok()) return pc::SetError(img.status());
    *out = new pagewise_image{std::move(*img)};
    return 0;
  });
}

int pagewise_source_open_remote(const char* url, const pagewise_remote_options* options,
                                pagewise_source** out) {
  return pc::Guard([&] {
    Result<std::unique_ptr<pagewise::Image>> img =
        pc::OpenRemote("pagewise_source_open_remote", url, options, out);
    if (!img.ok()) return pc::SetError(img.status());
    *out = new pagewise_source{pagewise::ImageSource(std::move(*img))};
    return 0;
  });
}

}  // extern "C"
