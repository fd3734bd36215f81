// ImageWriter: streams pages into data chunks of a temporary file and, in
// Commit, appends the index, writes the header last, fsyncs and renames.
//
// Concurrency: AddPages copies a batch of pages out of the caller's memory
// first (so memory that changes underneath cannot make a page's hash
// disagree with its stored bytes), hashes the copies without the lock, then
// takes the mutex once per batch to dedup, append to the open chunk and
// update the index. A chunk that fills up is taken out of the open slot and
// compressed and written by that thread without the lock; the file offset
// is reserved under the lock. Memory: the index, the dedup table and one
// chunk per thread in flight.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <unordered_map>
#include <zstd.h>

#include "image/chain.h"
#include "image/compression.h"
#include "image/format.h"
#include "image/page_table.h"

namespace pagewise {
namespace image {
namespace {

struct Hash128Hasher {
  size_t operator()(const Hash128& h) const { return static_cast<size_t>(h.lo); }
};

struct OpenChunk {
  uint64_t id = 0;
  uint32_t page_size = 0;
  uint32_t pages = 0;
  uint32_t capacity = 0;
  std::vector<uint8_t> buf;
};

// Per-thread staging for a batch of pages being added.
struct Staging {
  std::vector<uint8_t> copy;
  std::vector<Hash128> hash;
  std::vector<uint8_t> zero;
  std::vector<uint8_t> compressed;
};
thread_local Staging tls_staging;

constexpr size_t kBatchBytes = 256 * 1024;

std::string AbsoluteNormal(const std::string& p) {
  std::error_code ec;
  std::filesystem::path a = std::filesystem::absolute(p, ec);
  if (ec) a = p;
  return a.lexically_normal().string();
}

class ImageWriterImpl : public ImageWriter {
 public:
  ImageWriterImpl(Env* env, std::string path, std::string tmp, int fd, ImageWriteOptions opts)
      : env_(env), path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd), opts_(std::move(opts)) {}

  ~ImageWriterImpl() override { Abandon(); }

  Status SetParent(const std::string& recorded, const ChainImage& parent) {
    parent_recorded_ = recorded;
    parent_uuid_ = parent.top_uuid();
    parent_regions_ = parent.regions();
    regions_ = parent_regions_;
    tables_.resize(regions_.size());
    inherit_ = true;
    return Status::Ok();
  }

  Result<uint32_t> AddRegion(const RegionInfo& region) override {
    PW_RETURN_IF_ERROR(ValidateRegion(region));
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return Status::FailedPrecondition("image " + path_ + ": already committed or failed");
    if (inherit_) {
      if (pages_added_) {
        return Status::FailedPrecondition("image " + path_ +
                                          ": AddRegion after pages were added to the regions "
                                          "inherited from the parent");
      }
      inherit_ = false;
      regions_.clear();
      tables_.clear();
    }
    const size_t i = regions_.size();
    if (!parent_recorded_.empty()) {
      if (i >= parent_regions_.size()) {
        return Status::InvalidArgument("image " + path_ + ": region " + std::to_string(i) +
                                       " does not exist in the parent (it has " +
                                       std::to_string(parent_regions_.size()) + ")");
      }
      const RegionInfo& p = parent_regions_[i];
      if (p.address != region.address || p.length != region.length ||
          p.page_size != region.page_size) {
        return Status::InvalidArgument(
            "image " + path_ + ": region " + std::to_string(i) + " (" + Hex(region.address) +
            ", length " + Hex(region.length) + ") differs from the parent's (" + Hex(p.address) +
            ", length " + Hex(p.length) + "); a layer must list its parent's regions in order");
      }
    }
    if (regions_.size() >= UINT32_MAX) return Status::InvalidArgument("too many regions");
    regions_.push_back(region);
    tables_.emplace_back();
    return static_cast<uint32_t>(i);
  }

  Status AddPages(uint32_t region, uint64_t offset, const void* data, size_t len) override {
    return Add(region, offset, static_cast<const uint8_t*>(data), len);
  }

  Status AddZeroPages(uint32_t region, uint64_t offset, size_t len) override {
    return Add(region, offset, nullptr, len);
  }

  Status Commit() override;

  ImageStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  Status CheckAdd(uint32_t region, uint64_t offset, size_t len, uint32_t* page_size);
  Status Add(uint32_t region, uint64_t offset, const uint8_t* data, size_t len);
  // Compresses and writes a full (or final) chunk. Called without the lock.
  Status WriteChunk(OpenChunk chunk);
  // Records a failure (first one wins) and returns it.
  Status Fail(Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_.ok()) failed_ = s;
    return s;
  }
  void Abandon() {
    if (fd_ >= 0) {
      env_->Close(fd_).IgnoreError();  // the file is being discarded
      fd_ = -1;
    }
    if (!tmp_.empty()) {
      env_->Unlink(tmp_).IgnoreError();  // best effort: a leftover temp is never an image name
      tmp_.clear();
    }
  }
  // Builds the index and header from the in-memory state. Lock held.
  Status BuildIndex(Index* ix, Header* h);
  // Writes the last chunks, index and header; fsync, rename, directory fsync.
  Status Finish(std::vector<OpenChunk> rest);

  Env* env_;
  const std::string path_;
  std::string tmp_;
  int fd_;
  const ImageWriteOptions opts_;
  std::string parent_recorded_;
  Uuid parent_uuid_{};
  std::vector<RegionInfo> parent_regions_;

  mutable std::mutex mu_;
  bool inherit_ = false;
  bool pages_added_ = false;
  bool finished_ = false;
  Status failed_;
  std::vector<RegionInfo> regions_;
  std::vector<PageTable> tables_;
  std::unordered_map<Hash128, uint64_t, Hash128Hasher> dedup_;
  std::map<uint32_t, OpenChunk> open_;  // by page size
  std::vector<ChunkEntry> chunks_;       // by id; written ones have stored_length > 0
  uint64_t next_offset_ = kHeaderSize;
  ImageStats stats_;
};

Status ImageWriterImpl::CheckAdd(uint32_t region, uint64_t offset, size_t len,
                                 uint32_t* page_size) {
  if (!failed_.ok()) {
    return Status(failed_.code(), failed_.err(),
                  "image " + path_ + ": an earlier write failed (" + failed_.message() + ")");
  }
  if (finished_) return Status::FailedPrecondition("image " + path_ + ": already committed");
  if (region >= regions_.size()) {
    return Status::InvalidArgument("image " + path_ + ": region " + std::to_string(region) +
                                   " was not declared (" + std::to_string(regions_.size()) +
                                   " regions)");
  }
  const RegionInfo& r = regions_[region];
  if (offset % r.page_size != 0 || len % r.page_size != 0 || offset > r.length ||
      len > r.length - offset) {
    return Status::InvalidArgument("image " + path_ + ": pages [" + Hex(offset) + ", +" +
                                   Hex(len) + ") are unaligned or outside region " +
                                   std::to_string(region) + " (length " + Hex(r.length) +
                                   ", page size " + std::to_string(r.page_size) + ")");
  }
  *page_size = r.page_size;
  pages_added_ = true;
  return Status::Ok();
}

Status ImageWriterImpl::Add(uint32_t region, uint64_t offset, const uint8_t* data, size_t len) {
  uint32_t ps = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    PW_RETURN_IF_ERROR(CheckAdd(region, offset, len, &ps));
    if (data == nullptr) {
      PageTable& t = tables_[region];
      for (uint64_t p = offset / ps, e = (offset + len) / ps; p < e; ++p) {
        if (t.Set(p, PageTable::kZero) == PageTable::kAbsent) stats_.pages++;
      }
      return Status::Ok();
    }
  }
  Staging& st = tls_staging;
  const size_t batch_pages = std::max<size_t>(1, kBatchBytes / ps);
  for (size_t done = 0; done < len;) {
    const size_t n = std::min(batch_pages, (len - done) / ps);
    st.copy.resize(n * ps);
    std::memcpy(st.copy.data(), data + done, n * ps);
    st.hash.resize(n);
    st.zero.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* page = st.copy.data() + i * ps;
      st.zero[i] = IsZeroPage(page, ps);
      if (!st.zero[i] && opts_.dedup) st.hash[i] = PageHash(page, ps);
    }
    std::vector<OpenChunk> full;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!failed_.ok()) return failed_;
      PageTable& t = tables_[region];
      const uint64_t first = (offset + done) / ps;
      for (size_t i = 0; i < n; ++i) {
        uint64_t entry;
        if (st.zero[i]) {
          entry = PageTable::kZero;
        } else {
          auto it = opts_.dedup ? dedup_.find(st.hash[i]) : dedup_.end();
          if (it != dedup_.end()) {
            entry = PageTable::DataEntry(it->second);
            stats_.duplicate_pages++;
          } else {
            auto oc = open_.find(ps);
            if (oc == open_.end()) {
              OpenChunk c;
              c.id = chunks_.size();
              c.page_size = ps;
              c.capacity = static_cast<uint32_t>(
                  std::clamp<uint64_t>(opts_.chunk_bytes / ps, 1, kMaxSlotsPerChunk));
              c.buf.resize(uint64_t{c.capacity} * ps);
              chunks_.emplace_back();
              oc = open_.emplace(ps, std::move(c)).first;
            }
            OpenChunk& c = oc->second;
            const uint64_t ref = MakeRef(c.id, c.pages);
            std::memcpy(c.buf.data() + uint64_t{c.pages} * ps, st.copy.data() + i * ps, ps);
            c.pages++;
            stats_.stored_pages++;
            stats_.raw_bytes += ps;
            if (opts_.dedup) dedup_.emplace(st.hash[i], ref);
            entry = PageTable::DataEntry(ref);
            if (c.pages == c.capacity) {
              full.push_back(std::move(c));
              open_.erase(oc);
            }
          }
        }
        const uint64_t old = t.Set(first + i, entry);
        if (old == PageTable::kAbsent) stats_.pages++;
      }
    }
    for (OpenChunk& c : full) {
      Status s = WriteChunk(std::move(c));
      if (!s.ok()) return Fail(s);
    }
    done += n * ps;
  }
  return Status::Ok();
}

Status ImageWriterImpl::WriteChunk(OpenChunk c) {
  Staging& st = tls_staging;
  const size_t raw_len = uint64_t{c.pages} * c.page_size;
  ChunkEntry e;
  e.page_count = c.pages;
  e.page_size = c.page_size;
  e.raw_checksum = Checksum64(c.buf.data(), raw_len);
  const uint8_t* stored = c.buf.data();
  size_t stored_len = raw_len;
  if (CompressChunk(opts_.compression, opts_.level, c.buf.data(), raw_len, &st.compressed)) {
    stored = st.compressed.data();
    stored_len = st.compressed.size();
    e.compression = static_cast<uint8_t>(opts_.compression);
    e.stored_checksum = Checksum64(stored, stored_len);
  } else {
    e.stored_checksum = e.raw_checksum;
  }
  e.stored_length = static_cast<uint32_t>(stored_len);
  {
    std::lock_guard<std::mutex> lock(mu_);
    e.file_offset = next_offset_;
    next_offset_ += stored_len;
  }
  Status s = WriteFully(env_, fd_, stored, stored_len, static_cast<off_t>(e.file_offset));
  if (!s.ok()) {
    return s.WithContext("writing image " + path_ + " (temporary " + tmp_ + "), chunk " +
                         std::to_string(c.id));
  }
  std::lock_guard<std::mutex> lock(mu_);
  chunks_[c.id] = e;
  stats_.compressed_bytes += stored_len;
  return Status::Ok();
}

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
    tables_[r].ForEach([&](uint64_t page, uint64_t entry) {
      const RunKind kind = entry == PageTable::kZero ? RunKind::kZero : RunKind::kData;
      if (ix->runs.empty() || ix->runs.back().region != r || ix->runs.back().kind != kind ||
          ix->runs.back().first_page + ix->runs.back().count != page) {
        ix->runs.push_back(Run{r, kind, page, 0, ix->refs.size()});
      }
      ix->runs.back().count++;
      pages++;
      if (kind == RunKind::kZero) {
        zero++;
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
  for (const RegionInfo& r : regions_) {
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
  std::vector<OpenChunk> rest;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) {
      return Status::FailedPrecondition("image " + path_ + ": Commit called twice or after a failure");
    }
    if (!failed_.ok()) {
      finished_ = true;
      Status f(failed_.code(), failed_.err(),
               "image " + path_ + ": Commit refused, an earlier write failed: " +
                   failed_.message());
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
  if (s.ok()) s = env_->Fsync(fd_);
  if (!s.ok()) return s.WithContext(ctx);
  const int fd = fd_;
  fd_ = -1;
  s = env_->Close(fd);
  if (s.ok()) s = env_->Rename(tmp_, path_);
  if (!s.ok()) return s.WithContext(ctx);
  tmp_.clear();  // it is the final image now
  s = env_->FsyncParentDir(path_);
  if (!s.ok()) {
    return s.WithContext("image " + path_ +
                         " is complete but its directory could not be synced; it may not "
                         "survive a power loss");
  }
  return Status::Ok();
}

}  // namespace

}  // namespace image

using image::AbsoluteNormal;
using image::ChainImage;
using image::Hex;
using image::ImageWriterImpl;
using image::kMaxChunkRawBytes;
using image::kMaxStringBytes;
using image::NewUuid;
using image::Uuid;

Result<std::unique_ptr<ImageWriter>> ImageWriter::Create(const std::string& path,
                                                         const ImageWriteOptions& options) {
  Env* env = options.env != nullptr ? options.env : Env::Default();
  if (static_cast<uint8_t>(options.compression) > static_cast<uint8_t>(Compression::kLz4)) {
    return Status::InvalidArgument("unknown compression value");
  }
  if (options.compression == Compression::kZstd &&
      (options.level < ZSTD_minCLevel() || options.level > ZSTD_maxCLevel())) {
    return Status::InvalidArgument("zstd level " + std::to_string(options.level) +
                                   " out of range [" + std::to_string(ZSTD_minCLevel()) + ", " +
                                   std::to_string(ZSTD_maxCLevel()) + "]");
  }
  if (options.chunk_bytes < 4096 || options.chunk_bytes > kMaxChunkRawBytes) {
    return Status::InvalidArgument("chunk_bytes " + std::to_string(options.chunk_bytes) +
                                   " outside [4096, 16 MiB]");
  }
  if (path.empty() || path.back() == '/') {
    return Status::InvalidArgument("image path '" + path + "' does not name a file");
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);

  std::unique_ptr<ChainImage> parent;
  std::string recorded;
  if (!options.parent.empty()) {
    const std::string abs_parent = AbsoluteNormal(options.parent);
    const std::string abs_path = AbsoluteNormal(path);
    if (abs_parent == abs_path) {
      return Status::InvalidArgument("image " + path +
                                     " cannot be written on top of itself as parent");
    }
    Result<std::unique_ptr<ChainImage>> p = ChainImage::OpenChain(options.parent, {env, false});
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
  const Uuid rnd = NewUuid();
  uint64_t suffix;
  std::memcpy(&suffix, rnd.data(), 8);
  const std::string tmp = dir + "." + base + ".tmp-" + std::to_string(getpid()) + "-" +
                          Hex(suffix).substr(2);
  Result<int> fd = env->Open(tmp, O_RDWR | O_CREAT | O_EXCL, 0644);
  if (!fd.ok()) {
    return fd.status().WithContext("image " + path +
                                   ": creating its temporary file (is the directory there "
                                   "and writable?)");
  }
  auto w = std::make_unique<ImageWriterImpl>(env, path, tmp, *fd, options);
  if (parent) PW_RETURN_IF_ERROR(w->SetParent(recorded, *parent));
  return std::unique_ptr<ImageWriter>(std::move(w));
}

}  // namespace pagewise
