// Remote layers for the image reader: S3 manifests with content-addressed
// chunk objects, and image files behind http(s) URLs.
#include "remote/remote_image.h"

#include <algorithm>

#include "base/bytes.h"
#include "remote/url.h"

namespace pagewise::remote {
namespace {

constexpr size_t kHttpHeadBytes = 65536;

std::string UuidHex(const image::Uuid& u) { return HexBytes(u.data(), u.size()); }

Deadline After(std::chrono::nanoseconds t) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(t);
}

// Base of both chunk sources: the layer's index (set once the layer is
// decoded, before any read) and the store.
class RemoteChunks : public image::ChunkSource {
 public:
  explicit RemoteChunks(std::shared_ptr<ChunkStore> store) : store_(std::move(store)) {}
  void set_layer(const image::Layer* layer) { layer_ = layer; }
  bool remote() const override { return true; }

  Status ReadStored(uint64_t id, const image::ChunkEntry& c, uint8_t* dst, ReadPriority priority,
                    const std::string& what) const override {
    (void)c;
    Status s = store_->Read(Location(id), dst, priority);
    return s.ok() ? s : s.WithContext(what);
  }
  void WillRead(const uint64_t* ids, size_t n, ReadPriority priority) const override {
    std::vector<ChunkLocation> locs;
    locs.reserve(n);
    for (size_t i = 0; i < n; ++i) locs.push_back(Location(ids[i]));
    store_->Hint(std::move(locs), priority);
  }

 protected:
  virtual ChunkLocation Location(uint64_t id) const = 0;
  const image::ChunkEntry& Entry(uint64_t id) const { return layer_->index().chunks[id]; }

  std::shared_ptr<ChunkStore> store_;
  const image::Layer* layer_ = nullptr;
};

class S3Chunks final : public RemoteChunks {
 public:
  S3Chunks(std::shared_ptr<ChunkStore> store, std::shared_ptr<const S3Client> s3,
           std::string bucket, std::vector<Sha256Digest> shas)
      : RemoteChunks(std::move(store)),
        s3_(std::move(s3)),
        bucket_(std::move(bucket)),
        shas_(std::move(shas)) {
    // Every read and hint names its chunks: hex once, not at each mention.
    hex_.reserve(shas_.size());
    for (const Sha256Digest& d : shas_) hex_.push_back(HexLower(d));
  }

 private:
  ChunkLocation Location(uint64_t id) const override {
    ChunkLocation l;
    const std::string& hex = hex_[id];
    l.cache_key = "s3-" + hex;
    l.length = Entry(id).stored_length;
    l.checksum = Entry(id).stored_checksum;
    l.has_sha256 = true;
    l.sha256 = shas_[id];
    l.s3 = s3_;
    l.bucket = bucket_;
    l.key = kChunkPrefix + hex;
    return l;
  }

  std::shared_ptr<const S3Client> s3_;
  std::string bucket_;
  std::vector<Sha256Digest> shas_;
  std::vector<std::string> hex_;  // HexLower(shas_[i])
};

class HttpChunks final : public RemoteChunks {
 public:
  HttpChunks(std::shared_ptr<ChunkStore> store, std::string url)
      : RemoteChunks(std::move(store)), url_(std::move(url)) {}

 private:
  ChunkLocation Location(uint64_t id) const override {
    // The image's uuid and the chunk id name the bytes: every write of an
    // image gets a fresh uuid.
    ChunkLocation l;
    l.cache_key = "h-" + UuidHex(layer_->header().uuid) + "-" + std::to_string(id);
    l.length = Entry(id).stored_length;
    l.checksum = Entry(id).stored_checksum;
    l.url = url_;
    l.offset = Entry(id).file_offset;
    return l;
  }

  std::string url_;
};

class S3Layers final : public image::LayerResolver {
 public:
  S3Layers(std::shared_ptr<ChunkStore> store, std::shared_ptr<S3Client> s3)
      : store_(std::move(store)), s3_(std::move(s3)) {}

  Result<std::unique_ptr<image::Layer>> OpenLayer(const std::string& name,
                                                  uint64_t* bad_at) override {
    PW_ASSIGN_OR_RETURN(ObjectUrl u, ParseObjectUrl(name));
    PW_ASSIGN_OR_RETURN(Manifest m, FetchManifest(*s3_, u.bucket, u.key, store_->timeout()));
    const bool by_uuid = u.key.rfind(kLayerPrefix, 0) == 0;
    if (by_uuid && u.key.substr(sizeof(kLayerPrefix) - 1) != image::UuidString(m.uuid)) {
      return Status::Corruption("manifest " + name + " describes layer " +
                                image::UuidString(m.uuid) + ", not the one its name says");
    }
    const std::string parent =
        image::IsNullUuid(m.parent_uuid) ? "" : "s3://" + u.bucket + "/" + LayerKey(m.parent_uuid);
    const size_t nchunks = m.chunks.size();
    auto source = std::make_unique<S3Chunks>(store_, s3_, u.bucket, std::move(m.chunks));
    S3Chunks* raw = source.get();
    PW_ASSIGN_OR_RETURN(
        std::unique_ptr<image::Layer> layer,
        image::Layer::FromParts(name, m.header.data(), m.header.size(), m.file_size, m.index.data(),
                                m.index.size(), std::move(source), parent, bad_at));
    if (layer->header().uuid != m.uuid || layer->header().parent_uuid != m.parent_uuid ||
        layer->index().chunks.size() != nchunks) {
      return Status::Corruption("manifest " + name +
                                ": its identity or chunk table does not match the layer it "
                                "carries; push the image again");
    }
    raw->set_layer(layer.get());
    return layer;
  }

  std::string ParentName(const image::Layer& child) override {
    Result<ObjectUrl> u = ParseObjectUrl(child.path());
    const std::string bucket = u.ok() ? u->bucket : "";
    return "s3://" + bucket + "/" + LayerKey(child.header().parent_uuid);
  }

 private:
  std::shared_ptr<ChunkStore> store_;
  std::shared_ptr<S3Client> s3_;
};

class HttpLayers final : public image::LayerResolver {
 public:
  explicit HttpLayers(std::shared_ptr<ChunkStore> store) : store_(std::move(store)) {}

  Result<std::unique_ptr<image::Layer>> OpenLayer(const std::string& name,
                                                  uint64_t* bad_at) override {
    PW_ASSIGN_OR_RETURN(ObjectUrl u, ParseObjectUrl(name));
    (void)u;
    const Deadline deadline = After(store_->timeout());
    // The head: up to 64 KiB (less for a smaller file), and the file's size.
    std::vector<uint8_t> head(kHttpHeadBytes);
    uint64_t file_size = 0;
    auto build = [&] {
      HttpRequest r;
      r.url = name;
      r.headers = {{"Range", "bytes=0-" + std::to_string(kHttpHeadBytes - 1)}};
      r.sink = head.data();
      r.sink_len = head.size();
      return r;
    };
    auto check = [&](const HttpResponse& r, bool* transient) -> Status {
      if (r.transport_ok() && r.status == 206) {
        const size_t slash = r.content_range.rfind('/');
        file_size = slash == std::string::npos
                        ? 0
                        : std::strtoull(r.content_range.c_str() + slash + 1, nullptr, 10);
        *transient = false;
        if (file_size == 0 || r.body_len != std::min<uint64_t>(file_size, kHttpHeadBytes)) {
          return Status::IoError("GET " + name + ": no usable Content-Range (" + r.content_range +
                                 ")");
        }
        return Status::Ok();
      }
      return CheckRangeReply(r, 0, kHttpHeadBytes, "GET " + name, transient);
    };
    Result<HttpResponse> hr =
        PerformWithRetries(store_->http().get(), build, check, deadline, "GET " + name);
    if (!hr.ok()) return hr.status();
    head.resize(hr->body_len);
    if (hr->status == 200) file_size = hr->body_len;  // the whole (small) file
    PW_ASSIGN_OR_RETURN(image::Header h,
                        image::DecodeHeader(head.data(), head.size(), file_size, name, bad_at));
    std::vector<uint8_t> ix(h.index_length);
    auto build_ix = [&] {
      HttpRequest r;
      r.url = name;
      r.headers = {{"Range", "bytes=" + std::to_string(h.index_offset) + "-" +
                                 std::to_string(h.index_offset + h.index_length - 1)}};
      r.sink = ix.data();
      r.sink_len = ix.size();
      return r;
    };
    Result<HttpResponse> ir = PerformWithRetries(
        store_->http().get(), build_ix,
        [&](const HttpResponse& r, bool* transient) {
          return CheckRangeReply(r, h.index_offset, ix.size(), "GET " + name + " (index)",
                                 transient);
        },
        deadline, "GET " + name + " (index)");
    if (!ir.ok()) return ir.status();
    auto source = std::make_unique<HttpChunks>(store_, name);
    HttpChunks* raw = source.get();
    PW_ASSIGN_OR_RETURN(
        std::unique_ptr<image::Layer> layer,
        image::Layer::FromParts(name, head.data(), head.size(), file_size, ix.data(), ix.size(),
                                std::move(source), "", bad_at));
    raw->set_layer(layer.get());
    return layer;
  }

  std::string ParentName(const image::Layer& child) override {
    Result<ObjectUrl> u = ParseObjectUrl(child.path());
    if (!u.ok()) return child.index().parent_path;
    return ResolveRelativeUrl(*u, child.index().parent_path);
  }

 private:
  std::shared_ptr<ChunkStore> store_;
};

}  // namespace

Result<std::shared_ptr<S3Client>> MakeS3Client(const RemoteOptions& options,
                                               const std::shared_ptr<ChunkStore>& store, Env* env) {
  PW_ASSIGN_OR_RETURN(S3Config cfg, ResolveS3Config(options, ProcessEnvironment(), env));
  return std::make_shared<S3Client>(std::move(cfg), store->http());
}

Result<Manifest> FetchManifest(const S3Client& s3, const std::string& bucket,
                               const std::string& key, std::chrono::nanoseconds timeout) {
  PW_ASSIGN_OR_RETURN(
      std::vector<uint8_t> bytes,
      s3.GetObject(bucket, key, kMaxManifestBytes, ReadPriority::kDemand, After(timeout)));
  return DecodeManifest(bytes.data(), bytes.size(), "s3://" + bucket + "/" + key);
}

Result<std::unique_ptr<image::ChainImage>> OpenRemoteChain(const std::string& url,
                                                           const RemoteOptions& options, Env* env,
                                                           VerifyError* where) {
  auto fail = [&](const Status& s) {
    if (where != nullptr) {
      where->layer = url;
      where->region = -1;
      where->offset = 0;
      where->what = s.message();
    }
    return s;
  };
  Result<ObjectUrl> u = ParseObjectUrl(url);
  if (!u.ok()) return fail(u.status());
  Result<std::shared_ptr<ChunkStore>> store = ChunkStore::Shared(options);
  if (!store.ok()) return fail(store.status());
  if (u->scheme == UrlScheme::kS3) {
    Result<std::shared_ptr<S3Client>> s3 = MakeS3Client(options, *store, env);
    if (!s3.ok()) return fail(s3.status());
    S3Layers layers(*store, *s3);
    return image::ChainImage::OpenChainWith(&layers, url, where);
  }
  HttpLayers layers(*store);
  return image::ChainImage::OpenChainWith(&layers, url, where);
}

}  // namespace pagewise::remote
