// PullImage: s3://BUCKET/NAME to a local chain, layer files byte for byte.
#include <atomic>

#include "base/atomic_file.h"
#include "base/bytes.h"
#include "image/chain.h"
#include "pagewise/remote.h"
#include "remote/manifest.h"
#include "remote/remote_image.h"
#include "remote/transfer.h"
#include "remote/url.h"

namespace pagewise {
namespace remote {
namespace {

std::string Basename(const std::string& p) {
  const size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

// Header and index bytes of a layer whose recorded parent path becomes
// `parent` (unchanged bytes when it already is).
Status Reparent(const image::Layer& l, const std::string& parent, std::vector<uint8_t>* header,
                std::vector<uint8_t>* index) {
  if (l.index().parent_path == parent) return Status::Ok();
  const uint32_t old_len = LoadLe32(index->data() + 4);
  std::vector<uint8_t> ix(index->begin(), index->begin() + 16);
  StoreLe32(ix.data() + 4, static_cast<uint32_t>(parent.size()));
  ix.insert(ix.end(), parent.begin(), parent.end());
  ix.insert(ix.end(), index->begin() + 16 + old_len, index->end());
  image::Header h = l.header();
  h.index_length = ix.size();
  h.file_size = h.index_offset + ix.size();
  h.index_checksum = image::Checksum64(ix.data(), ix.size());
  *header = image::EncodeHeader(h);
  *index = std::move(ix);
  return Status::Ok();
}

class Puller {
 public:
  Puller(const PullOptions& opt, int threads) : opt_(opt), threads_(threads) {}

  // Writes layer `l` (bytes of its manifest) to a temporary file for `dest`.
  Status WriteLayer(const image::Layer& l, const Manifest& m, const std::string& dest,
                    const std::string& parent) {
    std::vector<uint8_t> header = m.header, index = m.index;
    PW_RETURN_IF_ERROR(Reparent(l, parent, &header, &index));
    PW_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> out, AtomicFile::Create(dest));
    AtomicFile* f = out.get();
    files_.push_back(std::move(out));
    PW_RETURN_IF_ERROR(f->Write(header.data(), header.size(), 0));
    const auto& chunks = l.index().chunks;
    PW_RETURN_IF_ERROR(ParallelFor(
        chunks.size(), threads_,
        [&](size_t id) {
          thread_local std::vector<uint8_t> buf;
          const image::ChunkEntry& c = chunks[id];
          buf.resize(c.stored_length);
          const std::string what = "image " + l.path() + ": chunk " + std::to_string(id);
          PW_RETURN_IF_ERROR(
              l.source().ReadStored(id, c, buf.data(), ReadPriority::kBackground, what));
          if (image::Checksum64(buf.data(), buf.size()) != c.stored_checksum) {
            return Status::Corruption(what + ": stored data checksum mismatch");
          }
          PW_RETURN_IF_ERROR(f->Write(buf.data(), buf.size(), c.file_offset));
          done_ += buf.size();
          return Status::Ok();
        },
        [&] {
          if (opt_.progress) opt_.progress(done_.load(), total_);
        }));
    PW_RETURN_IF_ERROR(f->Write(index.data(), index.size(), l.header().index_offset));
    stats_.bytes += header.size() + index.size();
    return Status::Ok();
  }

  // Puts every file in place, base layer first (a child never names a
  // parent that is not there yet).
  Status Publish() {
    for (size_t i = files_.size(); i-- > 0;) {
      PW_RETURN_IF_ERROR(files_[i]->Commit());
      stats_.files.insert(stats_.files.begin(), files_[i]->path());
    }
    stats_.bytes += done_.load();
    return Status::Ok();
  }

  void set_total(uint64_t t) { total_ = t; }
  const PullStats& stats() const { return stats_; }

 private:
  const PullOptions& opt_;
  int threads_;
  // Uncommitted ones are removed when the Puller goes (a failed pull).
  std::vector<std::unique_ptr<AtomicFile>> files_;
  std::atomic<uint64_t> done_{0};
  uint64_t total_ = 0;
  PullStats stats_;
};

}  // namespace
}  // namespace remote

Result<PullStats> PullImage(const std::string& url, const std::string& image_path,
                            const PullOptions& options) {
  PW_ASSIGN_OR_RETURN(remote::ObjectUrl u, remote::ParseObjectUrl(url));
  if (u.scheme != remote::UrlScheme::kS3) {
    return Status::InvalidArgument("pull reads from s3://BUCKET/NAME, not " + url);
  }
  PW_ASSIGN_OR_RETURN(std::unique_ptr<image::ChainImage> chain,
                      image::ChainImage::OpenChain(url, Env::Default(), nullptr, options.remote));
  PW_ASSIGN_OR_RETURN(std::shared_ptr<remote::ChunkStore> store,
                      remote::ChunkStore::Shared(options.remote));
  PW_ASSIGN_OR_RETURN(std::shared_ptr<remote::S3Client> s3,
                      remote::MakeS3Client(options.remote, store));
  const auto& layers = chain->layer_list();
  std::vector<std::string> dest;
  uint64_t total = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    dest.push_back(i == 0 ? image_path : image_path + ".parent-" + std::to_string(i));
    total += layers[i]->header().stat_compressed_bytes;
  }
  const remote::ChunkStore::Stats before = store->stats();
  remote::Puller p(options, store->options().connections);
  p.set_total(total);
  for (size_t i = 0; i < layers.size(); ++i) {
    const image::Layer& l = *layers[i];
    PW_ASSIGN_OR_RETURN(remote::ObjectUrl lu, remote::ParseObjectUrl(l.path()));
    Result<remote::Manifest> m = remote::FetchManifest(*s3, lu.bucket, lu.key, store->timeout());
    if (!m.ok()) return m.status().WithContext("pull " + url);
    const std::string parent = i + 1 < layers.size() ? remote::Basename(dest[i + 1]) : "";
    Status s = p.WriteLayer(l, *m, dest[i], parent);
    if (!s.ok()) return s.WithContext("pull " + url + " to " + image_path + " (nothing written)");
  }
  PW_RETURN_IF_ERROR(p.Publish());
  // What was written must open as the chain that was pulled.
  PW_ASSIGN_OR_RETURN(std::unique_ptr<image::ChainImage> check,
                      image::ChainImage::OpenChain(image_path, Env::Default()));
  if (check->top_uuid() != chain->top_uuid()) {
    return Status::Internal("pull " + url + ": the written chain is not the pulled one");
  }
  PullStats stats = p.stats();
  const remote::ChunkStore::Stats after = store->stats();
  stats.chunks_fetched = after.fetched - before.fetched;
  stats.chunks_cached = after.disk_hits - before.disk_hits + after.memory_hits - before.memory_hits;
  stats.chunks_from_peer = after.waited_for_peer - before.waited_for_peer;
  return stats;
}

}  // namespace pagewise
