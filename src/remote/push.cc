// PushImage: a local chain to s3://BUCKET/NAME, skipping what the bucket has.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "image/chain.h"
#include "pagewise/remote.h"
#include "remote/manifest.h"
#include "remote/remote_image.h"
#include "remote/transfer.h"
#include "remote/url.h"

namespace pagewise {
namespace remote {
namespace {

struct ChunkRef {
  const image::Layer* layer;
  uint64_t id;
};

class Pusher {
 public:
  Pusher(const PushOptions& opt, std::shared_ptr<S3Client> s3, std::string bucket, int connections,
         std::chrono::nanoseconds timeout)
      : opt_(opt),
        s3_(std::move(s3)),
        bucket_(std::move(bucket)),
        threads_(connections),
        timeout_(timeout) {}

  Deadline deadline() const {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout_);
  }

  // The stored bytes of chunk `id` of `l`, checked against the index.
  Status ReadChunk(const image::Layer& l, uint64_t id, std::vector<uint8_t>* buf) const {
    const image::ChunkEntry& c = l.index().chunks[id];
    buf->resize(c.stored_length);
    const std::string what = "image " + l.path() + ": chunk " + std::to_string(id);
    PW_RETURN_IF_ERROR(l.source().ReadStored(id, c, buf->data(), ReadPriority::kBackground, what));
    if (image::Checksum64(buf->data(), buf->size()) != c.stored_checksum) {
      return Status::Corruption(what +
                                ": stored data checksum mismatch; the image is damaged "
                                "(pagewise verify names the pages): nothing was pushed "
                                "for this layer");
    }
    return Status::Ok();
  }

  // SHA-256 of every chunk of `l`.
  Status HashChunks(const image::Layer& l, std::vector<Sha256Digest>* shas) {
    shas->resize(l.index().chunks.size());
    const int hash_threads = std::max(1u, std::thread::hardware_concurrency());
    return ParallelFor(
        shas->size(), hash_threads,
        [&](size_t id) {
          thread_local std::vector<uint8_t> buf;
          PW_RETURN_IF_ERROR(ReadChunk(l, id, &buf));
          (*shas)[id] = Sha256(buf.data(), buf.size());
          done_ += buf.size();
          return Status::Ok();
        },
        [&] { Progress(); });
  }

  // Which of `wanted` the bucket has: a listing of the chunk prefix when
  // that is cheaper than asking for each, HEAD requests for the rest.
  Result<std::set<std::string>> Existing(const std::vector<std::string>& wanted) {
    std::set<std::string> have;
    bool complete = false;
    const size_t max_pages = wanted.size() / 32 + 1;
    PW_ASSIGN_OR_RETURN(std::vector<std::string> listed,
                        s3_->ListKeys(bucket_, kChunkPrefix, max_pages, &complete, deadline()));
    const std::set<std::string> listed_set(listed.begin(), listed.end());
    std::vector<std::string> unknown;
    for (const std::string& k : wanted) {
      if (listed_set.count(k)) {
        have.insert(k);
      } else if (!complete) {
        unknown.push_back(k);
      }
    }
    std::mutex mu;
    PW_RETURN_IF_ERROR(ParallelFor(unknown.size(), threads_, [&](size_t i) {
      PW_ASSIGN_OR_RETURN(int64_t size, s3_->HeadObject(bucket_, unknown[i], deadline()));
      if (size >= 0) {
        std::lock_guard<std::mutex> lk(mu);
        have.insert(unknown[i]);
      }
      return Status::Ok();
    }));
    return have;
  }

  Status PutBytes(const std::string& key, const std::vector<uint8_t>& bytes) {
    if (bytes.size() > opt_.multipart_bytes) {
      PW_RETURN_IF_ERROR(s3_->PutObjectMultipart(bucket_, key, bytes.data(), bytes.size(),
                                                 opt_.part_bytes, deadline()));
    } else {
      PW_RETURN_IF_ERROR(s3_->PutObject(bucket_, key, bytes.data(), bytes.size(),
                                        HexLower(Sha256(bytes.data(), bytes.size())), deadline()));
    }
    stats_.manifest_bytes_uploaded += bytes.size();
    return Status::Ok();
  }

  Result<PushStats> Run(const image::ChainImage& chain, const std::string& name, Env* env) {
    const auto& layers = chain.layer_list();
    stats_.layers = layers.size();
    // Does the bucket exist (and are we allowed in)? Fail before any work.
    PW_ASSIGN_OR_RETURN(int64_t name_size, s3_->HeadObject(bucket_, name, deadline()));
    // Base first, so that every parent is in place before its child.
    std::vector<uint8_t> top_manifest;
    std::vector<size_t> todo;
    for (size_t i = layers.size(); i-- > 0;) {
      const image::Layer& l = *layers[i];
      const std::string key = LayerKey(l.header().uuid);
      PW_ASSIGN_OR_RETURN(int64_t have, s3_->HeadObject(bucket_, key, deadline()));
      if (have < 0) {
        todo.push_back(i);
        for (const auto& c : l.index().chunks) total_ += 2 * uint64_t{c.stored_length};
      } else if (i == 0) {
        // Layers are immutable (a fresh uuid for every write): the bucket's
        // manifest of this uuid is the one we would write.
        PW_ASSIGN_OR_RETURN(top_manifest, s3_->GetObject(bucket_, key, kMaxManifestBytes,
                                                         ReadPriority::kBackground, deadline()));
      }
    }
    for (size_t i : todo) {
      const image::Layer& l = *layers[i];
      Manifest m;
      m.uuid = l.header().uuid;
      m.parent_uuid = l.header().parent_uuid;
      m.file_size = l.header().file_size;
      PW_RETURN_IF_ERROR(ReadLayerBytes(env, l.path(), l.header(), &m.header, &m.index));
      PW_RETURN_IF_ERROR(HashChunks(l, &m.chunks));
      // Distinct chunks of this layer that the bucket lacks.
      std::map<std::string, ChunkRef> distinct;
      for (uint64_t id = 0; id < m.chunks.size(); ++id) {
        distinct.emplace(ChunkKey(m.chunks[id]), ChunkRef{&l, id});
      }
      std::vector<std::string> keys;
      for (const auto& [k, ref] : distinct) keys.push_back(k);
      PW_ASSIGN_OR_RETURN(std::set<std::string> have, Existing(keys));
      std::vector<std::pair<std::string, ChunkRef>> upload;
      for (const auto& [k, ref] : distinct) {
        if (!have.count(k)) upload.emplace_back(k, ref);
      }
      stats_.chunks += distinct.size();
      std::atomic<uint64_t> bytes{0};
      PW_RETURN_IF_ERROR(ParallelFor(
          upload.size(), threads_,
          [&](size_t j) {
            thread_local std::vector<uint8_t> buf;
            const ChunkRef& ref = upload[j].second;
            PW_RETURN_IF_ERROR(ReadChunk(*ref.layer, ref.id, &buf));
            PW_RETURN_IF_ERROR(s3_->PutObject(bucket_, upload[j].first, buf.data(), buf.size(),
                                              HexLower(m.chunks[ref.id]), deadline()));
            bytes += buf.size();
            done_ += buf.size();
            return Status::Ok();
          },
          [&] { Progress(); }));
      stats_.chunks_uploaded += upload.size();
      stats_.chunk_bytes_uploaded += bytes.load();
      const std::vector<uint8_t> encoded = EncodeManifest(m);
      PW_RETURN_IF_ERROR(PutBytes(LayerKey(m.uuid), encoded));
      stats_.layers_uploaded++;
      if (i == 0) top_manifest = encoded;
    }
    // NAME last: only now does the image appear (or change) under it.
    bool same = false;
    if (name_size == static_cast<int64_t>(top_manifest.size())) {
      Result<std::vector<uint8_t>> cur =
          s3_->GetObject(bucket_, name, kMaxManifestBytes, ReadPriority::kBackground, deadline());
      same = cur.ok() && *cur == top_manifest;
    }
    if (!same) {
      PW_RETURN_IF_ERROR(PutBytes(name, top_manifest));
      stats_.name_updated = true;
    }
    done_ = total_;
    Progress();
    return stats_;
  }

 private:
  void Progress() {
    if (opt_.progress) opt_.progress(std::min(done_.load(), total_), total_);
  }

  const PushOptions& opt_;
  std::shared_ptr<S3Client> s3_;
  std::string bucket_;
  int threads_;
  std::chrono::nanoseconds timeout_;
  PushStats stats_;
  std::atomic<uint64_t> done_{0};
  uint64_t total_ = 0;
};

}  // namespace
}  // namespace remote

Result<PushStats> PushImage(const std::string& image_path, const std::string& url,
                            const PushOptions& options) {
  PW_ASSIGN_OR_RETURN(remote::ObjectUrl u, remote::ParseObjectUrl(url));
  if (u.scheme != remote::UrlScheme::kS3) {
    return Status::InvalidArgument("push writes to s3://BUCKET/NAME, not " + url);
  }
  if (remote::IsUrl(image_path)) {
    return Status::InvalidArgument("push reads a local image; " + image_path +
                                   " is a URL (pull it first)");
  }
  PW_ASSIGN_OR_RETURN(std::unique_ptr<image::ChainImage> chain,
                      image::ChainImage::OpenChain(image_path, Env::Default()));
  // Pushing reads local files: the store is only for its connections.
  remote::ChunkStore::Options so = remote::ChunkStore::OptionsFor(options.remote);
  so.cache_dir.clear();
  PW_ASSIGN_OR_RETURN(std::shared_ptr<remote::ChunkStore> store, remote::ChunkStore::Shared(so));
  PW_ASSIGN_OR_RETURN(std::shared_ptr<remote::S3Client> s3,
                      remote::MakeS3Client(options.remote, store));
  remote::Pusher p(options, s3, u.bucket, store->options().connections, store->timeout());
  Result<PushStats> r = p.Run(*chain, u.key, Env::Default());
  if (!r.ok()) return r.status().WithContext("push " + image_path + " to " + url);
  return r;
}

}  // namespace pagewise
