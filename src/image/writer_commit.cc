// ImageWriter: Commit (last chunks, index, header last, fsync, rename,
// directory fsync) and Create (temporary file beside the target, parent).
#include <zstd.h>

#include <filesystem>

#include "image/image_env.h"
#include "image/writer.h"

namespace pagewise {
namespace image {
namespace {

std::string AbsoluteNormal(const std::string& p) {
  std::error_code ec;
  std::filesystem::path a = std::filesystem::absolute(p, ec);
  if (ec) a = p;
  return a.lexically_normal().string();
}

}  // namespace

Status ImageWriterImpl::BuildIndex(Index* ix, Header* h) {
  ix->parent_path = parent_recorded_;
  ix->regions = regions_;
  ix->chunks = chunks_;
  std::vector<uint64_t> slot_base(chunks_.size() + 1, 0);
  for (size_t c = 0; c < chunks_.size(); ++c) {
    if (chunks_[c].stored_length == 0) {
      return Status::Internal("image " + path_ + ": chunk " + std::to_string(c) + " never written");
    }
    slot_base[c + 1] = slot_base[c] + chunks_[c].page_count;
  }
  std::vector<bool> used(slot_base.back(), false);
  uint64_t pages = 0, zero = 0, data = 0, distinct = 0;
  for (uint32_t r = 0; r < tables_.size(); ++r) {
    // Zero ranges come as one span each; data pages one at a time.
    tables_[r].ForEachSpan([&](uint64_t page, uint64_t count, uint64_t entry) {
      const RunKind kind = entry == PageTable::kZero ? RunKind::kZero : RunKind::kData;
      if (ix->runs.empty() || ix->runs.back().region != r || ix->runs.back().kind != kind ||
          ix->runs.back().first_page + ix->runs.back().count != page) {
        ix->runs.push_back(Run{r, kind, page, 0, ix->refs.size()});
      }
      ix->runs.back().count += count;
      pages += count;
      if (kind == RunKind::kZero) {
        zero += count;
      } else {
        const uint64_t ref = PageTable::EntryRef(entry);
        ix->refs.push_back(ref);
        data++;
        const uint64_t slot = slot_base[RefChunk(ref)] + RefSlot(ref);
        if (!used[slot]) {
          used[slot] = true;
          distinct++;
        }
      }
    });
  }
  stats_.pages = pages;
  stats_.zero_pages = zero;
  stats_.duplicate_pages = data - distinct;
  stats_.stored_pages = slot_base.back();
  stats_.raw_bytes = 0;
  stats_.compressed_bytes = 0;
  for (const ChunkEntry& c : chunks_) {
    stats_.raw_bytes += c.raw_length();
    stats_.compressed_bytes += c.stored_length;
  }
  h->page_size = 0;
  for (const Region& r : regions_) {
    if (h->page_size == 0 || r.page_size < h->page_size) h->page_size = r.page_size;
  }
  h->region_count = static_cast<uint32_t>(regions_.size());
  h->uuid = NewUuid();
  h->parent_uuid = parent_uuid_;
  h->stat_pages = stats_.pages;
  h->stat_zero_pages = stats_.zero_pages;
  h->stat_duplicate_pages = stats_.duplicate_pages;
  h->stat_stored_pages = stats_.stored_pages;
  h->stat_raw_bytes = stats_.raw_bytes;
  h->stat_compressed_bytes = stats_.compressed_bytes;
  h->chunk_count = chunks_.size();
  h->run_count = ix->runs.size();
  h->compression = static_cast<uint8_t>(opts_.compression);
  return Status::Ok();
}

Status ImageWriterImpl::Commit() {
  Drain();  // every batch applied and its full chunks written (or failed)
  std::vector<OpenChunk> rest;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) {
      return Status::FailedPrecondition("image " + path_ +
                                        ": Commit called twice or after a failure");
    }
    if (!failed_.ok()) {
      finished_ = true;
      Status f(
          failed_.code(), failed_.err(),
          "image " + path_ + ": Commit refused, an earlier write failed: " + failed_.message());
      Abandon();
      return f;
    }
    if (!parent_recorded_.empty() && !inherit_ && regions_.size() != parent_regions_.size()) {
      return Status::InvalidArgument("image " + path_ + ": declares " +
                                     std::to_string(regions_.size()) + " regions, its parent " +
                                     std::to_string(parent_regions_.size()) +
                                     "; a layer must list all of its parent's regions");
    }
    finished_ = true;
    for (auto& [ps, c] : open_) rest.push_back(std::move(c));
    open_.clear();
  }
  Status s = Finish(std::move(rest));
  if (!s.ok()) {
    Fail(s).IgnoreError();  // returned below
    Abandon();
  }
  return s;
}

Status ImageWriterImpl::Finish(std::vector<OpenChunk> rest) {
  for (OpenChunk& c : rest) PW_RETURN_IF_ERROR(WriteChunk(std::move(c)));
  Index ix;
  Header h;
  std::vector<uint8_t> index_bytes, header_bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    PW_RETURN_IF_ERROR(BuildIndex(&ix, &h));
    index_bytes = EncodeIndex(ix);
    h.index_offset = next_offset_;
    h.index_length = index_bytes.size();
    h.index_checksum = Checksum64(index_bytes.data(), index_bytes.size());
    h.file_size = h.index_offset + h.index_length;
    stats_.file_bytes = h.file_size;
    header_bytes = EncodeHeader(h);
  }
  const std::string ctx = "committing image " + path_ + " (temporary " + tmp_ + ")";
  Status s = WriteFully(env_, fd_, index_bytes.data(), index_bytes.size(),
                        static_cast<off_t>(h.index_offset));
  // The header goes last: until it is written the file has no magic.
  if (s.ok()) s = WriteFully(env_, fd_, header_bytes.data(), header_bytes.size(), 0);
  if (!s.ok()) return s.WithContext(ctx);
  fd_ = -1;
  // fsync, rename, directory fsync; the only error after which the image
  // is in place is the directory fsync, and the message says so.
  s = file_->Commit();
  if (!s.ok()) return s.WithContext("image " + path_);
  return Status::Ok();
}

}  // namespace image

using image::AbsoluteNormal;
using image::ChainImage;
using image::ImageWriterImpl;
using image::kMaxChunkRawBytes;
using image::kMaxStringBytes;

Result<std::unique_ptr<ImageWriter>> ImageWriter::Create(const std::string& path,
                                                         const ImageWriteOptions& options) {
  return CreateImageWriter(path, options, Env::Default());
}

Result<std::unique_ptr<ImageWriter>> CreateImageWriter(const std::string& path,
                                                       const ImageWriteOptions& options, Env* env) {
  if (static_cast<uint8_t>(options.compression) > static_cast<uint8_t>(Compression::kLz4)) {
    return Status::InvalidArgument("unknown compression value");
  }
  if (options.compression == Compression::kZstd &&
      (options.level < ZSTD_minCLevel() || options.level > ZSTD_maxCLevel())) {
    return Status::InvalidArgument("zstd level " + std::to_string(options.level) +
                                   " out of range [" + std::to_string(ZSTD_minCLevel()) + ", " +
                                   std::to_string(ZSTD_maxCLevel()) + "]");
  }
  if (options.threads < 0 || options.threads > 256) {
    return Status::InvalidArgument("threads " + std::to_string(options.threads) +
                                   " outside [0, 256] (0: one per CPU)");
  }
  if (options.chunk_bytes < 4096 || options.chunk_bytes > kMaxChunkRawBytes) {
    return Status::InvalidArgument("chunk_bytes " + std::to_string(options.chunk_bytes) +
                                   " outside [4096, 16 MiB]");
  }
  if (path.empty() || path.back() == '/') {
    return Status::InvalidArgument("image path '" + path + "' does not name a file");
  }
  std::unique_ptr<ChainImage> parent;
  std::string recorded;
  if (!options.parent.empty()) {
    const std::string abs_parent = AbsoluteNormal(options.parent);
    const std::string abs_path = AbsoluteNormal(path);
    if (abs_parent == abs_path) {
      return Status::InvalidArgument("image " + path +
                                     " cannot be written on top of itself as parent");
    }
    Result<std::unique_ptr<ChainImage>> p = ChainImage::OpenChain(options.parent, env);
    if (!p.ok()) return p.status().WithContext("image " + path + ": opening parent");
    parent = std::move(p).value();
    if (options.parent[0] == '/') {
      recorded = options.parent;
    } else {
      recorded = std::filesystem::path(abs_parent)
                     .lexically_relative(std::filesystem::path(abs_path).parent_path())
                     .string();
      if (recorded.empty()) recorded = abs_parent;
    }
    if (recorded.size() > kMaxStringBytes) {
      return Status::InvalidArgument("parent path longer than 4096 bytes");
    }
  }
  AtomicFileOptions fo;
  fo.env = env;
  if (parent) {
    // A layer must not replace any layer of its own parent chain.
    for (const LayerInfo& l : parent->layers()) fo.inputs.push_back(l.path);
  }
  Result<std::unique_ptr<AtomicFile>> file = AtomicFile::Create(path, fo);
  if (!file.ok()) return file.status().WithContext("image " + path);
  auto w = std::make_unique<ImageWriterImpl>(env, path, std::move(file).value(), options);
  if (parent) PW_RETURN_IF_ERROR(w->SetParent(recorded, *parent));
  return std::unique_ptr<ImageWriter>(std::move(w));
}

}  // namespace pagewise
