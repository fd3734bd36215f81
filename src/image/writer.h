// ImageWriterImpl: the ImageWriter implementation, shared by writer.cc
// (adding pages: the pipeline that turns them into chunks) and
// writer_commit.cc (index, header, commit, Create).
//
// Pipeline: AddPages splits its pages into batches (kBatchBytes) and copies
// each batch out of the caller's memory into a staging buffer - the only
// work the caller must do itself, so that memory changing underneath can
// never make a page's hash disagree with its stored bytes - then queues it
// on the helper threads (TaskPool) and returns as soon as every batch is
// copied. A batch task tests its pages for zero and hashes them (in
// parallel with other batches), then applies them IN SUBMISSION ORDER
// (tickets; so a page recorded twice keeps its later content) under the
// mutex: dedup lookups, page-table entries, appending new pages to the
// open chunk. A chunk that fills up is taken out of the open slot and
// checksummed, compressed and written by that task outside the mutex; its
// file offset is reserved under the mutex just before the write, so chunks
// are contiguous in the file in completion order. Memory: the index, the
// dedup table, a bounded number of staging buffers and one chunk per task
// in flight. With threads = 1 the caller runs each batch itself.
//
// Thread safety: AddPages/AddZeroPages/stats from any threads; AddRegion
// and Commit must not race them (ImageWriter's contract). Lock order:
// pipe_mu_, then the pool's mutex (Submit), never the reverse; mu_ is never
// held while taking pipe_mu_.
#ifndef PAGEWISE_IMAGE_WRITER_H_
#define PAGEWISE_IMAGE_WRITER_H_

#include <algorithm>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/atomic_file.h"
#include "base/bytes.h"
#include "image/chain.h"
#include "image/format.h"
#include "image/page_table.h"
#include "image/writer_pool.h"
#include "pagewise/image.h"

namespace pagewise::image {

// XXH3-128 values are uniformly distributed: the low half is a fine hash.
struct Hash128Hasher {
  size_t operator()(const Hash128& h) const { return static_cast<size_t>(h.lo); }
};

// A data chunk being filled: `pages` of `capacity` slots of `page_size`
// bytes in `buf` (not zero-initialised); its id is assigned when it is
// opened.
struct OpenChunk {
  uint64_t id = 0;
  uint32_t page_size = 0;
  uint32_t pages = 0;
  uint32_t capacity = 0;
  std::unique_ptr<uint8_t[]> buf;
};

// Bytes of pages one pipeline batch carries.
inline constexpr size_t kBatchBytes = 256 * 1024;

// Total threads (the caller included) a writer uses for `requested`
// (ImageWriteOptions::threads; 0: one per online CPU, at most 8).
int WriterThreads(int requested);

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
        opts_(std::move(opts)),
        pool_(WriterThreads(opts_.threads) - 1) {
    max_staging_ = static_cast<size_t>(2 * pool_.helpers() + 1);
  }

  ~ImageWriterImpl() override {
    Drain();  // queued batches reference this writer
    Abandon();
  }

  Status SetParent(const std::string& recorded, const ChainImage& parent) {
    parent_recorded_ = recorded;
    parent_uuid_ = parent.top_uuid();
    parent_regions_ = parent.regions();
    regions_ = parent_regions_;
    for (const Region& r : regions_) max_page_size_ = std::max(max_page_size_, r.page_size);
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
        return Status::InvalidArgument("image " + path_ + ": region " + std::to_string(i) + " (" +
                                       HexAddr(region.address) + ", length " +
                                       HexAddr(region.length) + ") differs from the parent's (" +
                                       HexAddr(p.address) + ", length " + HexAddr(p.length) +
                                       "); a layer must list its parent's regions in order");
      }
    }
    if (regions_.size() >= UINT32_MAX) return Status::InvalidArgument("too many regions");
    regions_.push_back(region);
    tables_.emplace_back();
    max_page_size_ = std::max(max_page_size_, region.page_size);
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
    Drain();  // earlier AddPages of these pages must not land after this
    return Add(region, offset, nullptr, len);
  }

  Status Commit() override;

  // ---- zero-copy hand-off for the live snapshot (not in ImageWriter) ----
  // The caller fills a staging buffer itself (with its own copy routine,
  // while it holds the pages' claims) and hands it over; the pipeline then
  // does the rest exactly as for AddPages. Acquire the buffer BEFORE taking
  // anything a writer thread may wait for: AcquireStaging() may block
  // (helping the pipeline) while all staging buffers are in flight.
  //
  // Pages of `region` one staging buffer holds (>= 1).
  size_t StagingPages(uint32_t region) const { return StagingBytes() / regions_[region].page_size; }
  uint8_t* AcquireStaging();
  // Returns an unused buffer from AcquireStaging().
  void ReleaseStaging(uint8_t* buf);
  // Takes `staging` (from AcquireStaging(); page i of pages.size() <=
  // StagingPages(region) at byte i * page size) and records page pages[i]
  // (page numbers within the region, distinct) with it, like AddPages.
  // Errors as AddPages (the buffer is consumed either way).
  Status SubmitStaged(uint32_t region, std::vector<uint64_t> pages, uint8_t* staging);

  ImageStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  // A batch of pages copied into a staging buffer, waiting to be applied.
  struct Batch {
    uint64_t ticket = 0;  // submission order
    uint32_t region = 0;
    uint64_t first_page = 0;  // page i is first_page + i, unless `index` is set
    std::shared_ptr<const std::vector<uint64_t>> index;  // else page i is (*index)[i]
    size_t pages = 0;
    uint32_t page_size = 0;
    uint8_t* staging = nullptr;  // pages * page_size bytes, from AcquireStaging
    uint64_t page(size_t i) const { return index ? (*index)[i] : first_page + i; }
  };
  // Assigns the ticket and queues (or, without helpers, runs) the batch.
  void Enqueue(Batch b);

  Status CheckAdd(uint32_t region, uint64_t offset, size_t len, uint32_t* page_size);
  Status Add(uint32_t region, uint64_t offset, const uint8_t* data, size_t len);
  // Zero test and hashes, then (in ticket order, under mu_) Apply, then
  // writes the chunks that filled up. Any thread; never fails: errors go to
  // failed_ (Fail) and are returned by later calls and Commit.
  void ProcessBatch(const Batch& b);
  // Records the batch's pages. mu_ held. Full chunks move to *full.
  void Apply(const Batch& b, const std::vector<uint8_t>& zero, const std::vector<Hash128>& hash,
             std::vector<OpenChunk>* full);
  // One batch's bytes: kBatchBytes, or one page if pages are larger.
  size_t StagingBytes() const { return std::max<size_t>(kBatchBytes, max_page_size_); }
  // Returns once every queued batch was processed (runs queued tasks on
  // the calling thread meanwhile).
  void Drain();
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
  uint64_t applied_ = 0;  // batches applied, in ticket order
  std::condition_variable applied_cv_;

  // The pipeline's bookkeeping (pipe_mu_).
  std::mutex pipe_mu_;
  std::condition_variable pipe_cv_;  // a batch finished or a staging buffer came back
  uint64_t next_ticket_ = 0;
  size_t inflight_ = 0;  // batches handed out and not finished
  std::vector<std::unique_ptr<uint8_t[]>> staging_free_;
  size_t staging_made_ = 0;
  size_t max_staging_ = 1;
  uint64_t max_page_size_ = 0;  // of the declared regions (set before pages come)

  TaskPool pool_;  // last: destroyed (joined) first
};

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_WRITER_H_
