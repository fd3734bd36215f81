// PullImage: s3://BUCKET/NAME to a local chain, layer files byte for byte.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>

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
  const uint32_t old_len = image::Get32(index->data() + 4);
  std::vector<uint8_t> ix(index->begin(), index->begin() + 16);
  image::Put32(ix.data() + 4, static_cast<uint32_t>(parent.size()));
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
  Puller(const PullOptions& opt, Env* env, int threads) : opt_(opt), env_(env), threads_(threads) {}
  ~Puller() {
    for (const std::string& t : temps_) env_->Unlink(t).IgnoreError();  // failed pull: no trace
  }

  // Writes layer `l` (bytes of its manifest) to a temporary file beside `dest`.
  Status WriteLayer(const image::Layer& l, const Manifest& m, const std::string& dest,
                    const std::string& parent) {
    std::vector<uint8_t> header = m.header, index = m.index;
    PW_RETURN_IF_ERROR(Reparent(l, parent, &header, &index));
    thread_local std::mt19937_64 rng{std::random_device{}()};
    const size_t slash = dest.rfind('/');
    const std::string dir = slash == std::string::npos ? "" : dest.substr(0, slash + 1);
    const std::string tmp =
        dir + "." + Basename(dest) + ".pagewise-pull-" + std::to_string(getpid()) + "-" +
        std::to_string(rng() % 1000000000);
    PW_ASSIGN_OR_RETURN(int fd, env_->Open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    temps_.push_back(tmp);
    finals_.push_back(dest);
    Status s = WriteFully(env_, fd, header.data(), header.size(), 0);
    const auto& chunks = l.index().chunks;
    if (s.ok()) {
      s = ParallelFor(
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
            PW_RETURN_IF_ERROR(
                WriteFully(env_, fd, buf.data(), buf.size(), static_cast<off_t>(c.file_offset)));
            done_ += buf.size();
            return Status::Ok();
          },
          [&] {
            if (opt_.progress) opt_.progress(done_.load(), total_);
          });
    }
    if (s.ok()) {
      s = WriteFully(env_, fd, index.data(), index.size(),
                     static_cast<off_t>(l.header().index_offset));
    }
    if (s.ok()) s = env_->Fsync(fd);
    Status cl = env_->Close(fd);
    if (s.ok()) s = cl;
    stats_.bytes += header.size() + index.size();
    return s.ok() ? s : s.WithContext("writing " + tmp);
  }

  // Renames every temporary file to its final name, base layer first.
  Status Publish() {
    for (size_t i = temps_.size(); i-- > 0;) {
      PW_RETURN_IF_ERROR(env_->Rename(temps_[i], finals_[i]));
      temps_[i].clear();
    }
    temps_.clear();
    if (!finals_.empty()) PW_RETURN_IF_ERROR(env_->FsyncParentDir(finals_.front()));
    stats_.files = finals_;
    stats_.bytes += done_.load();
    return Status::Ok();
  }

  void set_total(uint64_t t) { total_ = t; }
  const PullStats& stats() const { return stats_; }

 private:
  const PullOptions& opt_;
  Env* env_;
  int threads_;
  std::vector<std::string> temps_, finals_;
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
  ImageOpenOptions oo;
  oo.remote = options.remote;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<image::ChainImage> chain,
                      image::ChainImage::OpenChain(url, oo));
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
  Env* env = Env::Default();
  remote::Puller p(options, env, store->options().connections);
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
  ImageOpenOptions local;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<image::ChainImage> check,
                      image::ChainImage::OpenChain(image_path, local));
  if (check->top_uuid() != chain->top_uuid()) {
    return Status::Internal("pull " + url + ": the written chain is not the pulled one");
  }
  return p.stats();
}

}  // namespace pagewise
