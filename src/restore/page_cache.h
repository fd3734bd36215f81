// PageCacheImpl: the SharedPageCache of pagewise/restore.h. A memfd that
// holds a source's flat view (flat offset = file offset), put into the
// page cache page by page the first time any clone needs a page, so that
// every clone mapping the memfd MAP_PRIVATE gets it with UFFDIO_CONTINUE
// (the page-cache page mapped read-only: no copy; a write copies it into
// that clone alone).
//
// Per page it remembers: unknown, in the page cache (written), or zero
// (not written: zero pages are installed with UFFDIO_ZEROPAGE and cost no
// page-cache memory). Two clones may populate the same page at once: both
// write the same source bytes, which changes nothing for a clone that has
// it mapped already, so no lock is needed; a page is marked written only
// after its pwrite returned (release), and a clone continues a page only
// after seeing that mark (acquire) or writing it itself.
//
// Thread safety: all methods are safe from any thread and any number of
// engines at once.
#ifndef PAGEWISE_RESTORE_PAGE_CACHE_H_
#define PAGEWISE_RESTORE_PAGE_CACHE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "pagewise/restore.h"
#include "sys/env.h"

namespace pagewise::restore {

class PageCacheImpl final : public SharedPageCache {
 public:
  // Creates the memfd (sized to the source) through `env`. Errors: memfd
  // creation or sizing failed (kNotSupported when memfds are unavailable).
  static Result<std::unique_ptr<PageCacheImpl>> Create(std::shared_ptr<const PageSource> source,
                                                       Env* env);
  // The source whose flat view the memfd holds (restores must use it).
  const std::shared_ptr<const PageSource>& source() const { return source_; }
  ~PageCacheImpl() override;

  int fd() const override { return fd_; }
  uint64_t size() const override { return size_; }
  uint64_t cached_pages() const override { return cached_.load(); }

  size_t page_size() const { return ps_; }
  // True if every page of [off, off + pages*page_size) is known (written
  // or zero); then zero[i] says which are zero. off is page aligned.
  bool Known(uint64_t off, size_t pages, uint8_t* zero) const;
  // Writes the pages of [off, off + pages*page_size) that are not zero
  // (zero[i] == 0) and not yet written into the memfd, from `data` (the
  // source's bytes of the whole range), and marks them; zero pages are
  // marked zero. Errors: the write failed (nothing marked for the pages
  // not written).
  Status Populate(uint64_t off, size_t pages, const char* data, const uint8_t* zero);

 private:
  enum : uint8_t { kUnknown = 0, kWritten = 1, kZero = 2 };
  PageCacheImpl(std::shared_ptr<const PageSource> source, Env* env, int fd, uint64_t size);

  std::shared_ptr<const PageSource> source_;
  Env* env_;
  int fd_;
  uint64_t size_;
  size_t ps_;
  std::vector<std::atomic<uint8_t>> state_;  // one per page
  std::atomic<uint64_t> cached_{0};
};

}  // namespace pagewise::restore

#endif  // PAGEWISE_RESTORE_PAGE_CACHE_H_
