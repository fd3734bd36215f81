// Test helpers for lazy restore tests (header-only; included by
// src/restore/*_test.cc and tests/serve_*_test.cc, never by the library).
//
// PatternBuffer: a flat "memory file" whose page i holds a pattern derived
// from (seed, i), except every 5th page (i % 5 == 3), which is zero.
// ReadPageOrSigbus / ThreadBlockedInUffd: from testing/fault_observe.h
// (reading a page that may be poisoned; a thread waiting for a monitor).
// FakeImage: an in-memory Image with regions at flat offsets, so that
// ImageSource can be tested without the image store.
//
// Thread safety: PatternBuffer and FakeImage are immutable after
// construction.
#ifndef PAGEWISE_RESTORE_RESTORE_TESTING_H_
#define PAGEWISE_RESTORE_RESTORE_TESTING_H_

#include <fcntl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/restore.h"
#include "sys/env.h"
#include "testing/fault_observe.h"
#include "testing/test_util.h"

namespace pagewise::testing {

inline size_t Ps() { return PageSize(); }

inline bool IsZeroPageIndex(size_t i) { return i % 5 == 3; }

class PatternBuffer {
 public:
  PatternBuffer(size_t pages, uint64_t seed) : seed_(seed), bytes_(pages * Ps(), 0) {
    for (size_t i = 0; i < pages; ++i) {
      if (!IsZeroPageIndex(i)) FillPage(bytes_.data() + i * Ps(), seed, i);
    }
  }
  const char* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  size_t pages() const { return bytes_.size() / Ps(); }
  uint64_t seed() const { return seed_; }
  // True if `p` holds flat page `index` of this buffer.
  bool Matches(const char* p, size_t index) const {
    return std::memcmp(p, bytes_.data() + index * Ps(), Ps()) == 0;
  }
  // Writes the buffer to a file (a flat memory file).
  bool WriteFile(const std::string& path) const {
    Env* env = Env::Default();
    Result<int> fd = env->Open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!fd.ok()) return false;
    const Status written = WriteFully(env, *fd, bytes_.data(), bytes_.size(), 0);
    return env->Close(*fd).ok() && written.ok();
  }

 private:
  uint64_t seed_;
  std::vector<char> bytes_;
};

inline bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// Copies one page from `p` into `out`; true if the access raised SIGBUS.
inline bool ReadPageOrSigbus(const char* p, char* out) { return ReadPageOrSigbus(p, out, Ps()); }

// An Image over a PatternBuffer: region k covers flat bytes
// [spans[k].first, spans[k].first + spans[k].second); zero pages classify
// as kZero inside regions; gaps between regions are absent (zero).
class FakeImage final : public Image {
 public:
  FakeImage(const PatternBuffer* buf, std::vector<std::pair<uint64_t, uint64_t>> spans)
      : buf_(buf) {
    for (auto& [off, len] : spans) {
      Region r;
      r.address = 0x10000000 + off;
      r.length = len;
      r.kind = RegionKind::kFlat;
      r.offset = off;
      regions_.push_back(r);
    }
    layers_.push_back(LayerInfo{"fake.img", "", {}, Compression::kNone, 1});
  }
  const std::vector<Region>& regions() const override { return regions_; }
  const std::vector<LayerInfo>& layers() const override { return layers_; }
  Status Read(uint32_t region, uint64_t offset, void* dst, size_t len) const override {
    std::memcpy(dst, buf_->data() + regions_[region].offset + offset, len);
    return Status::Ok();
  }
  Status Classify(uint32_t region, uint64_t offset, size_t len,
                  std::vector<PageSourceKind>* out) const override {
    out->clear();
    for (uint64_t o = offset; o < offset + len; o += Ps()) {
      const char* p = buf_->data() + regions_[region].offset + o;
      out->push_back(AllZero(p, Ps()) ? PageSourceKind::kZero : PageSourceKind::kData);
    }
    return Status::Ok();
  }
  Status ClassifyRuns(uint32_t region, uint64_t offset, uint64_t len,
                      std::vector<SourceRun>* out) const override {
    std::vector<PageSourceKind> kinds;
    Status s = Classify(region, offset, len, &kinds);
    out->clear();
    for (size_t i = 0; i < kinds.size(); ++i) {
      if (!out->empty() && out->back().kind == kinds[i]) {
        out->back().length += Ps();
      } else {
        out->push_back({offset + i * Ps(), Ps(), kinds[i]});
      }
    }
    return s;
  }
  Status TopLayerRuns(uint32_t, std::vector<std::pair<uint64_t, uint64_t>>*) const override {
    return Status::NotSupported("fake image");
  }
  uint64_t flat_size() const override { return buf_->size(); }
  Status ReadFlat(uint64_t offset, void* dst, size_t len) const override {
    // Only bytes inside regions come from the buffer; gaps read as zero.
    std::memset(dst, 0, len);
    for (const Region& r : regions_) {
      const uint64_t lo = std::max(offset, r.offset);
      const uint64_t hi = std::min(offset + len, r.offset + r.length);
      if (lo < hi) std::memcpy(static_cast<char*>(dst) + (lo - offset), buf_->data() + lo, hi - lo);
    }
    return Status::Ok();
  }
  Status Verify(VerifyError*) const override { return Status::Ok(); }
  Status VerifyWithProgress(VerifyError*, const ProgressFn&) const override { return Status::Ok(); }

 private:
  const PatternBuffer* buf_;
  std::vector<Region> regions_;
  std::vector<LayerInfo> layers_;
};

}  // namespace pagewise::testing

#endif  // PAGEWISE_RESTORE_RESTORE_TESTING_H_
