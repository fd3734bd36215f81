// ChainImage: opening a chain of layers and resolving which layer serves
// each page.
#include "image/chain.h"

#include <algorithm>
#include <set>

#include "image/image_env.h"
#include "remote/remote_image.h"

namespace pagewise {

Result<std::unique_ptr<Image>> Image::Open(const std::string& path,
                                           const ImageOpenOptions& options) {
  return OpenImage(path, options, Env::Default());
}

Result<std::unique_ptr<Image>> OpenImage(const std::string& path, const ImageOpenOptions& options,
                                         Env* env) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<image::ChainImage> img,
                      image::ChainImage::OpenChain(path, env, nullptr, options.remote));
  if (options.verify_data) {
    VerifyError err;
    PW_RETURN_IF_ERROR(img->Verify(&err));
  }
  return std::unique_ptr<Image>(std::move(img));
}

Status VerifyImage(const std::string& path, VerifyError* error, const ProgressFn& progress) {
  return VerifyImage(path, error, progress, Env::Default());
}

Status VerifyImage(const std::string& path, VerifyError* error, const ProgressFn& progress,
                   Env* env) {
  VerifyError unused;
  if (error == nullptr) error = &unused;
  // A remote image is verified from its store, not from the host's cache.
  RemoteOptions remote;
  remote.cache_reads = false;
  Result<std::unique_ptr<image::ChainImage>> img =
      image::ChainImage::OpenChain(path, env, error, remote);
  if (!img.ok()) return img.status();
  return (*img)->VerifyWithProgress(error, progress);
}

namespace image {
namespace {

bool SameRegionShape(const Region& a, const Region& b) {
  return a.address == b.address && a.length == b.length && a.page_size == b.page_size;
}

}  // namespace

std::string ResolveParentPath(const std::string& child_path, const std::string& recorded) {
  if (!recorded.empty() && recorded[0] == '/') return recorded;
  size_t slash = child_path.rfind('/');
  if (slash == std::string::npos) return recorded;
  return child_path.substr(0, slash + 1) + recorded;
}

namespace {

class LocalFiles final : public LayerResolver {
 public:
  explicit LocalFiles(Env* env) : env_(env) {}
  Result<std::unique_ptr<Layer>> OpenLayer(const std::string& name, uint64_t* bad_at) override {
    return Layer::Open(env_, name, bad_at);
  }
  std::string ParentName(const Layer& child) override {
    return ResolveParentPath(child.path(), child.index().parent_path);
  }

 private:
  Env* env_;
};

}  // namespace

Result<std::unique_ptr<ChainImage>> ChainImage::OpenChain(const std::string& path, Env* env,
                                                          VerifyError* where,
                                                          const RemoteOptions& remote) {
  if (remote::IsUrl(path)) return remote::OpenRemoteChain(path, remote, env, where);
  LocalFiles files(env != nullptr ? env : Env::Default());
  return OpenChainWith(&files, path, where);
}

Result<std::unique_ptr<ChainImage>> ChainImage::OpenChainWith(LayerResolver* resolver,
                                                              const std::string& path,
                                                              VerifyError* where) {
  VerifyError unused;
  if (where == nullptr) where = &unused;
  // Records the failing layer for callers that report it (VerifyImage).
  auto failed = [where](const std::string& layer, uint64_t offset, const Status& s) {
    where->layer = layer;
    where->region = -1;
    where->offset = offset;
    where->what = s.message();
    return s;
  };
  std::unique_ptr<ChainImage> img(new ChainImage());
  std::set<Uuid> seen;
  std::string cur = path;
  while (true) {
    if (img->layers_.size() >= kMaxChainDepth) {
      return failed(cur, 0,
                    Status::Corruption("image " + path + ": parent chain longer than " +
                                       std::to_string(kMaxChainDepth) + " layers (a cycle?)"));
    }
    uint64_t bad_at = 0;
    Result<std::unique_ptr<Layer>> opened = resolver->OpenLayer(cur, &bad_at);
    if (!opened.ok()) {
      if (img->layers_.empty()) return failed(cur, bad_at, opened.status());
      return failed(cur, bad_at,
                    opened.status().WithContext("image " + img->layers_.back()->path() +
                                                ": opening its parent " + cur));
    }
    std::unique_ptr<Layer> layer = std::move(opened).value();
    if (!img->layers_.empty()) {
      const Layer& child = *img->layers_.back();
      if (layer->header().uuid != child.header().parent_uuid) {
        return failed(
            cur, 64,
            Status::Corruption("image " + child.path() + " was written on top of parent identity " +
                               UuidString(child.header().parent_uuid) + " but " + cur +
                               " is image " + UuidString(layer->header().uuid) +
                               ": the parent was replaced or moved; put the original parent back"));
      }
      const auto& cr = child.index().regions;
      const auto& pr = layer->index().regions;
      bool same = cr.size() == pr.size();
      for (size_t i = 0; same && i < cr.size(); ++i) same = SameRegionShape(cr[i], pr[i]);
      if (!same) {
        return failed(cur, layer->header().index_offset,
                      Status::Corruption("image " + child.path() +
                                         ": its regions do not match those of its parent " + cur +
                                         " (damaged chain)"));
      }
    }
    if (!seen.insert(layer->header().uuid).second) {
      return failed(
          cur, 64, Status::Corruption("image " + path + ": the parent chain loops back to " + cur));
    }
    const bool has_parent = !layer->index().parent_path.empty();
    if (has_parent) cur = resolver->ParentName(*layer);
    img->layers_.push_back(std::move(layer));
    if (!has_parent) break;
  }
  for (const auto& l : img->layers_) {
    img->infos_.push_back(l->Info());
    img->remote_ = img->remote_ || l->source().remote();
  }
  const size_t nregions = img->layers_.front()->index().regions.size();
  img->last_end_ = std::make_unique<std::atomic<uint64_t>[]>(nregions);
  img->seq_reads_ = std::make_unique<std::atomic<uint32_t>[]>(nregions);
  img->ahead_end_ = std::make_unique<std::atomic<uint64_t>[]>(2 * nregions);
  img->regions_ = img->layers_.front()->index().regions;
  img->Resolve();

  // The flat view: regions sorted by flat_offset must not overlap.
  const auto& regs = img->regions_;
  img->flat_order_.resize(regs.size());
  for (uint32_t i = 0; i < regs.size(); ++i) img->flat_order_[i] = i;
  std::sort(img->flat_order_.begin(), img->flat_order_.end(),
            [&](uint32_t a, uint32_t b) { return regs[a].offset < regs[b].offset; });
  uint64_t end = 0;
  for (uint32_t r : img->flat_order_) {
    if (regs[r].length == 0) continue;
    if (regs[r].offset < end) img->flat_ok_ = false;
    end = std::max(end, regs[r].offset + regs[r].length);  // each < 2^62: no overflow
  }
  img->flat_size_ = end;
  return img;
}

void ChainImage::Resolve() {
  resolved_.assign(regions_.size(), {});
  std::vector<Segment> pieces, merged;
  for (uint32_t r = 0; r < regions_.size(); ++r) {
    std::vector<Segment>& cur = resolved_[r];
    // From the base (last layer) up to the top: upper runs win.
    for (size_t li = layers_.size(); li-- > 0;) {
      const Layer& layer = *layers_[li];
      const auto& runs = layer.index().runs;
      const size_t ub = layer.RunsBegin(r), ue = layer.RunsEnd(r);
      if (ub == ue) continue;
      // Pieces of `cur` not covered by this layer's runs.
      pieces.clear();
      size_t j = ub;
      for (const Segment& s : cur) {
        uint64_t pos = s.first;
        const uint64_t end = s.first + s.count;
        while (j < ue && runs[j].first_page + runs[j].count <= pos) ++j;
        for (size_t k = j; k < ue && runs[k].first_page < end; ++k) {
          if (runs[k].first_page > pos) {
            pieces.push_back(
                {pos, runs[k].first_page - pos, s.layer, s.run, s.skip + (pos - s.first)});
          }
          pos = std::max(pos, runs[k].first_page + runs[k].count);
          if (pos >= end) break;
        }
        if (pos < end) pieces.push_back({pos, end - pos, s.layer, s.run, s.skip + (pos - s.first)});
      }
      // Merge with this layer's runs (both sorted by first page, disjoint).
      merged.clear();
      merged.reserve(pieces.size() + (ue - ub));
      size_t a = 0;
      for (size_t k = ub; k < ue; ++k) {
        while (a < pieces.size() && pieces[a].first < runs[k].first_page)
          merged.push_back(pieces[a++]);
        merged.push_back({runs[k].first_page, runs[k].count, static_cast<uint32_t>(li), k, 0});
      }
      while (a < pieces.size()) merged.push_back(pieces[a++]);
      cur.swap(merged);
    }
  }
}

}  // namespace image
}  // namespace pagewise
