// Test helpers for lazy restore tests (header-only; included by
// src/restore/*_test.cc and tests/serve_*_test.cc, never by the library).
//
// PatternBuffer: a flat "memory file" whose page i holds a pattern derived
// from (seed, i), except every 5th page (i % 5 == 3), which is zero.
// ReadPageOrSigbus: reads a page on the calling thread and reports whether
// the access raised SIGBUS (a poisoned page) instead of crashing.
// FakeImage: an in-memory Image with regions at flat offsets, so that
// ImageSource can be tested without the image store.
// ThreadBlockedInUffd: whether a thread sleeps in handle_userfault.
//
// Thread safety: PatternBuffer and FakeImage are immutable after
// construction. ReadPageOrSigbus may be called from any thread (it installs
// a process-wide SIGBUS handler that jumps back only on threads inside it).
#ifndef PAGEWISE_RESTORE_RESTORE_TESTING_H_
#define PAGEWISE_RESTORE_RESTORE_TESTING_H_

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/restore.h"
#include "testing/test_util.h"

namespace pagewise::testing {

inline size_t Ps() { return static_cast<size_t>(getpagesize()); }

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
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    size_t off = 0;
    while (off < bytes_.size()) {
      ssize_t n = write(fd, bytes_.data() + off, bytes_.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    close(fd);
    return off == bytes_.size();
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

namespace internal {
inline thread_local sigjmp_buf* t_sigbus_jmp = nullptr;
inline void OnSigbus(int sig) {
  if (t_sigbus_jmp != nullptr) siglongjmp(*t_sigbus_jmp, 1);
  signal(sig, SIG_DFL);
  raise(sig);
}
}  // namespace internal

// Copies one page from `p` into `out` with plain loads (no interceptor in
// between); returns true if the access raised SIGBUS instead.
inline bool ReadPageOrSigbus(const char* p, char* out) {
  struct sigaction sa = {};
  sa.sa_handler = internal::OnSigbus;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  sigjmp_buf jb;
  internal::t_sigbus_jmp = &jb;
  bool bus = false;
  if (sigsetjmp(jb, 1) == 0) {
    const volatile char* src = p;
    for (size_t i = 0; i < Ps(); ++i) out[i] = src[i];
  } else {
    bus = true;
  }
  internal::t_sigbus_jmp = nullptr;
  return bus;
}

// True if thread `tid` of this process sleeps in handle_userfault (it is
// waiting for a userfaultfd monitor to resolve its fault).
inline bool ThreadBlockedInUffd(pid_t tid) {
  std::string path = "/proc/self/task/" + std::to_string(tid) + "/wchan";
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[64] = {};
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  return n > 0 && std::strcmp(buf, "handle_userfault") == 0;
}

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
