// ImageWriter: streams pages into data chunks of a temporary file (see
// writer.h for the concurrency design).
#include "image/writer.h"

#include <cstring>

#include "image/compression.h"

namespace pagewise::image {
namespace {

// Per-thread staging for a batch of pages being added.
struct Staging {
  std::vector<uint8_t> copy;
  std::vector<Hash128> hash;
  std::vector<uint8_t> zero;
  std::vector<uint8_t> compressed;
};
thread_local Staging tls_staging;

constexpr size_t kBatchBytes = 256 * 1024;

}  // namespace

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
    return Status::InvalidArgument("image " + path_ + ": pages [" + Hex(offset) + ", +" + Hex(len) +
                                   ") are unaligned or outside region " + std::to_string(region) +
                                   " (length " + Hex(r.length) + ", page size " +
                                   std::to_string(r.page_size) + ")");
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

}  // namespace pagewise::image
