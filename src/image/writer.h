// ImageWriterImpl: the ImageWriter implementation, shared by writer.cc
// (adding pages, writing chunks) and writer_commit.cc (index, header,
// commit, Create).
//
// Concurrency: AddPages copies a batch of pages out of the caller's memory
// first (so memory that changes underneath cannot make a page's hash
// disagree with its stored bytes), hashes the copies without the lock, then
// takes the mutex once per batch to dedup, append to the open chunk and
// update the index. A chunk that fills up is taken out of the open slot and
// compressed and written by that thread without the lock; the file offset
// is reserved under the lock. Memory: the index, the dedup table and one
// chunk per thread in flight.
//
// Thread safety: AddPages/AddZeroPages/stats from any threads; AddRegion
// and Commit must not race them (ImageWriter's contract).
#ifndef PAGEWISE_IMAGE_WRITER_H_
#define PAGEWISE_IMAGE_WRITER_H_

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/atomic_file.h"
#include "image/chain.h"
#include "image/format.h"
#include "image/page_table.h"
#include "pagewise/image.h"

namespace pagewise::image {

// XXH3-128 values are uniformly distributed: the low half is a fine hash.
struct Hash128Hasher {
  size_t operator()(const Hash128& h) const { return static_cast<size_t>(h.lo); }
};

// A data chunk being filled: `pages` of `capacity` slots of `page_size`
// bytes in `buf`; its id is assigned when it is opened.
struct OpenChunk {
  uint64_t id = 0;
  uint32_t page_size = 0;
  uint32_t pages = 0;
  uint32_t capacity = 0;
  std::vector<uint8_t> buf;
};

class ImageWriterImpl : public ImageWriter {
 public:
  // Writes through `file` (the temporary file of `path`).
  ImageWriterImpl(Env* env, std::string path, std::unique_ptr<AtomicFile> file,
                  ImageWriteOptions opts)
      : env_(env),
        path_(std::move(path)),
        tmp_(file->temp_path()),
        fd_(file->fd()),
        file_(std::move(file)),
        opts_(std::move(opts)) {}

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

  Result<uint32_t> AddRegion(const Region& region) override {
    PW_RETURN_IF_ERROR(ValidateRegion(region));
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_)
      return Status::FailedPrecondition("image " + path_ + ": already committed or failed");
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
      const Region& p = parent_regions_[i];
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
    if (opts_.dedup) {
      // Size the dedup index for every page now: growing it later rehashes
      // every entry under mu_ (tens of ms at 10^5 pages), and a live
      // snapshot's fault path may be waiting for mu_ then. Capped so that a
      // huge region costs at most 32 MiB of buckets up front.
      reserved_pages_ += region.length / region.page_size;
      dedup_.reserve(static_cast<size_t>(std::min<uint64_t>(reserved_pages_, uint64_t{1} << 22)));
    }
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
  // Closes and removes the temporary file (AtomicFile::Abandon).
  void Abandon() {
    fd_ = -1;
    file_.reset();
  }
  // Builds the index and header from the in-memory state. Lock held.
  Status BuildIndex(Index* ix, Header* h);
  // Writes the last chunks, index and header; fsync, rename, directory fsync.
  Status Finish(std::vector<OpenChunk> rest);

  Env* env_;
  const std::string path_;
  const std::string tmp_;  // the temporary file's name, for messages
  int fd_;                 // file_'s descriptor; -1 once committed or abandoned
  std::unique_ptr<AtomicFile> file_;
  const ImageWriteOptions opts_;
  std::string parent_recorded_;
  Uuid parent_uuid_{};
  std::vector<Region> parent_regions_;

  mutable std::mutex mu_;
  bool inherit_ = false;
  bool pages_added_ = false;
  bool finished_ = false;
  Status failed_;
  std::vector<Region> regions_;
  std::vector<PageTable> tables_;
  std::unordered_map<Hash128, uint64_t, Hash128Hasher> dedup_;
  uint64_t reserved_pages_ = 0;         // pages of the declared regions (dedup_ sizing)
  std::map<uint32_t, OpenChunk> open_;  // by page size
  std::vector<ChunkEntry> chunks_;      // by id; written ones have stored_length > 0
  uint64_t next_offset_ = kHeaderSize;
  ImageStats stats_;
};

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_WRITER_H_
