// ImageWriter: streams pages through the batch pipeline into data chunks of
// a temporary file (see writer.h for the design).
#include "image/writer.h"

#include <cstring>
#include <thread>

#include "base/bytes.h"
#include "image/compression.h"

namespace pagewise::image {
namespace {

// Per-thread scratch for a batch's zero flags and hashes, and for the
// compressed bytes of a chunk.
struct Scratch {
  std::vector<Hash128> hash;
  std::vector<uint8_t> zero;
  std::vector<uint8_t> compressed;
};
thread_local Scratch tls_scratch;

}  // namespace

int WriterThreads(int requested) {
  if (requested > 0) return requested;
  const unsigned n = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp<unsigned>(n, 1, 8));
}

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
  const Region& r = regions_[region];
  if (offset % r.page_size != 0 || len % r.page_size != 0 || offset > r.length ||
      len > r.length - offset) {
    return Status::InvalidArgument("image " + path_ + ": pages [" + HexAddr(offset) + ", +" +
                                   HexAddr(len) + ") are unaligned or outside region " +
                                   std::to_string(region) + " (length " + HexAddr(r.length) +
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
      // One interval, whatever the length: no per-page work.
      stats_.pages += tables_[region].SetZeroRange(offset / ps, len / ps);
      return Status::Ok();
    }
  }
  const size_t batch_pages = std::max<size_t>(1, kBatchBytes / ps);
  for (size_t done = 0; done < len;) {
    Batch b;
    b.region = region;
    b.first_page = (offset + done) / ps;
    b.pages = std::min(batch_pages, (len - done) / ps);
    b.page_size = ps;
    b.staging = AcquireStaging();
    // The one copy out of the caller's memory: from here on the batch is
    // ours, whatever the caller does with `data`.
    std::memcpy(b.staging, data + done, b.pages * ps);
    done += b.pages * ps;
    Enqueue(std::move(b));
  }
  // An error of this call's batches (or an earlier one) shows here if it
  // has already happened, else in a later call or in Commit.
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}

Status ImageWriterImpl::SubmitStaged(uint32_t region, std::vector<uint64_t> pages,
                                     uint8_t* staging) {
  uint32_t ps = 0;
  Status s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (region >= regions_.size() || pages.size() > StagingPages(region)) {
      s = Status::InvalidArgument("image " + path_ + ": staged batch of " +
                                  std::to_string(pages.size()) + " pages for region " +
                                  std::to_string(region) + " does not fit");
    }
    for (size_t i = 0; s.ok() && i < pages.size(); ++i) {
      const uint64_t rp = regions_[region].page_size;
      s = CheckAdd(region, pages[i] * rp, rp, &ps);
    }
  }
  if (!s.ok() || pages.empty()) {
    ReleaseStaging(staging);  // outside mu_ (lock order, writer.h)
    return s;
  }
  Batch b;
  b.region = region;
  b.pages = pages.size();
  b.page_size = ps;
  b.index = std::make_shared<const std::vector<uint64_t>>(std::move(pages));
  b.staging = staging;
  Enqueue(std::move(b));
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}

void ImageWriterImpl::Enqueue(Batch b) {
  if (pool_.helpers() == 0) {
    {
      std::lock_guard<std::mutex> lock(pipe_mu_);
      b.ticket = next_ticket_++;
      inflight_++;
    }
    ProcessBatch(b);
    return;
  }
  // Ticket and queue position assigned together: FIFO order is ticket
  // order, which ProcessBatch's in-order wait relies on (writer_pool.h).
  std::lock_guard<std::mutex> lock(pipe_mu_);
  b.ticket = next_ticket_++;
  inflight_++;
  pool_.Submit([this, b = std::move(b)] { ProcessBatch(b); });
}

void ImageWriterImpl::ProcessBatch(const Batch& b) {
  Scratch& sc = tls_scratch;
  const size_t ps = b.page_size;
  sc.zero.resize(b.pages);
  sc.hash.resize(b.pages);
  for (size_t i = 0; i < b.pages; ++i) {
    const uint8_t* page = b.staging + i * ps;
    sc.zero[i] = IsAllZero(page, ps);
    if (!sc.zero[i] && opts_.dedup) sc.hash[i] = PageHash(page, ps);
  }
  std::vector<OpenChunk> full;
  {
    std::unique_lock<std::mutex> lock(mu_);
    // Every earlier batch is already running on some thread (FIFO), so this
    // wait ends.
    applied_cv_.wait(lock, [&] { return applied_ == b.ticket; });
    if (failed_.ok()) Apply(b, sc.zero, sc.hash, &full);
    applied_++;
  }
  applied_cv_.notify_all();
  ReleaseStaging(b.staging);  // Apply copied what it keeps
  for (OpenChunk& c : full) {
    Status s = WriteChunk(std::move(c));
    if (!s.ok()) Fail(s).IgnoreError();  // reported by later calls and Commit
  }
  {
    std::lock_guard<std::mutex> lock(pipe_mu_);
    inflight_--;
  }
  pipe_cv_.notify_all();
}

void ImageWriterImpl::Apply(const Batch& b, const std::vector<uint8_t>& zero,
                            const std::vector<Hash128>& hash, std::vector<OpenChunk>* full) {
  const uint32_t ps = b.page_size;
  PageTable& t = tables_[b.region];
  for (size_t i = 0; i < b.pages; ++i) {
    uint64_t entry;
    if (zero[i]) {
      entry = PageTable::kZero;
    } else {
      auto it = opts_.dedup ? dedup_.find(hash[i]) : dedup_.end();
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
          c.buf.reset(new uint8_t[uint64_t{c.capacity} * ps]);
          chunks_.emplace_back();
          oc = open_.emplace(ps, std::move(c)).first;
        }
        OpenChunk& c = oc->second;
        const uint64_t ref = MakeRef(c.id, c.pages);
        std::memcpy(c.buf.get() + uint64_t{c.pages} * ps, b.staging + i * ps, ps);
        c.pages++;
        stats_.stored_pages++;
        stats_.raw_bytes += ps;
        if (opts_.dedup) dedup_.emplace(hash[i], ref);
        entry = PageTable::DataEntry(ref);
        if (c.pages == c.capacity) {
          full->push_back(std::move(c));
          open_.erase(oc);
        }
      }
    }
    if (t.Set(b.page(i), entry) == PageTable::kAbsent) stats_.pages++;
  }
}

uint8_t* ImageWriterImpl::AcquireStaging() {
  std::unique_lock<std::mutex> lock(pipe_mu_);
  for (;;) {
    if (!staging_free_.empty()) {
      uint8_t* b = staging_free_.back().release();
      staging_free_.pop_back();
      return b;
    }
    if (staging_made_ < max_staging_) {
      staging_made_++;
      // Every buffer is StagingBytes() long: max_page_size_ is fixed before
      // the first page arrives (AddRegion may not follow pages).
      return new uint8_t[StagingBytes()];
    }
    // All in flight: help them along rather than sleep.
    lock.unlock();
    if (!pool_.RunOne()) {
      lock.lock();
      pipe_cv_.wait(lock, [this] { return !staging_free_.empty(); });
      continue;
    }
    lock.lock();
  }
}

void ImageWriterImpl::ReleaseStaging(uint8_t* buf) {
  {
    std::lock_guard<std::mutex> lock(pipe_mu_);
    staging_free_.emplace_back(buf);
  }
  pipe_cv_.notify_all();
}

void ImageWriterImpl::Drain() {
  std::unique_lock<std::mutex> lock(pipe_mu_);
  while (inflight_ != 0) {
    lock.unlock();
    const bool ran = pool_.RunOne();
    lock.lock();
    if (!ran) pipe_cv_.wait(lock, [this] { return inflight_ == 0; });
  }
}

Status ImageWriterImpl::WriteChunk(OpenChunk c) {
  Scratch& sc = tls_scratch;
  const size_t raw_len = uint64_t{c.pages} * c.page_size;
  ChunkEntry e;
  e.page_count = c.pages;
  e.page_size = c.page_size;
  e.raw_checksum = Checksum64(c.buf.get(), raw_len);
  const uint8_t* stored = c.buf.get();
  size_t stored_len = raw_len;
  if (CompressChunk(opts_.compression, opts_.level, c.buf.get(), raw_len, &sc.compressed)) {
    stored = sc.compressed.data();
    stored_len = sc.compressed.size();
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

}  // namespace pagewise::image
