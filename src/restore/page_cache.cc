// PageCacheImpl: the shared memfd of MINOR-mode clones.
#include "restore/page_cache.h"

#include <sys/mman.h>

#include <string>
#include <utility>

namespace pagewise {

Result<std::unique_ptr<SharedPageCache>> SharedPageCache::Create(
    std::shared_ptr<const PageSource> source) {
  PW_ASSIGN_OR_RETURN(auto cache,
                      restore::PageCacheImpl::Create(std::move(source), Env::Default()));
  return std::unique_ptr<SharedPageCache>(std::move(cache));
}

namespace restore {

PageCacheImpl::PageCacheImpl(std::shared_ptr<const PageSource> source, Env* env, int fd,
                             uint64_t size)
    : source_(std::move(source)),
      env_(env),
      fd_(fd),
      size_(size),
      ps_(PageSize()),
      state_((size + ps_ - 1) / ps_) {}

PageCacheImpl::~PageCacheImpl() {
  // Clones that mapped the memfd keep the file alive through their
  // mappings; this only drops our reference.
  env_->Close(fd_).IgnoreError();  // destructor: nowhere to report
}

Result<std::unique_ptr<PageCacheImpl>> PageCacheImpl::Create(
    std::shared_ptr<const PageSource> source, Env* env) {
  if (source == nullptr) return Status::InvalidArgument("shared page cache: no source");
  Result<int> fd = env->MemfdCreate("pagewise-page-cache", MFD_CLOEXEC);
  if (!fd.ok()) {
    return fd.status().WithContext(
        "shared page cache: creating its memfd (needs memfd_create, "
        "Linux 3.17+, and shmem)");
  }
  const uint64_t ps = PageSize();
  const uint64_t size = (source->size() + ps - 1) / ps * ps;
  Status st = env->Ftruncate(*fd, static_cast<off_t>(size));
  if (!st.ok()) {
    env->Close(*fd).IgnoreError();  // already failing
    return st.WithContext("shared page cache: sizing its memfd to " + std::to_string(size) +
                          " bytes");
  }
  return std::unique_ptr<PageCacheImpl>(new PageCacheImpl(std::move(source), env, *fd, size));
}

bool PageCacheImpl::Known(uint64_t off, size_t pages, uint8_t* zero) const {
  const size_t first = off / ps_;
  if (first + pages > state_.size()) return false;
  for (size_t i = 0; i < pages; ++i) {
    const uint8_t s = state_[first + i].load(std::memory_order_acquire);
    if (s == kUnknown) return false;
    zero[i] = s == kZero ? 1 : 0;
  }
  return true;
}

Status PageCacheImpl::Populate(uint64_t off, size_t pages, const char* data, const uint8_t* zero) {
  const size_t first = off / ps_;
  if (first + pages > state_.size()) {
    return Status::InvalidArgument("shared page cache: offset " + std::to_string(off) +
                                   " beyond its " + std::to_string(size_) + " bytes");
  }
  size_t i = 0;
  while (i < pages) {
    if (zero[i]) {
      uint8_t expect = kUnknown;
      state_[first + i].compare_exchange_strong(expect, kZero, std::memory_order_acq_rel);
      ++i;
      continue;
    }
    if (state_[first + i].load(std::memory_order_acquire) == kWritten) {
      ++i;
      continue;
    }
    if (data == nullptr)
      return Status::Internal("shared page cache: no bytes for page " +
                              std::to_string(off + i * ps_));
    // A run of pages to write with one pwrite.
    size_t n = 1;
    while (i + n < pages && !zero[i + n] &&
           state_[first + i + n].load(std::memory_order_acquire) != kWritten) {
      ++n;
    }
    PW_RETURN_IF_ERROR(WriteFully(env_, fd_, data + i * ps_, n * ps_, off + i * ps_)
                           .WithContext("shared page cache: writing its memfd"));
    for (size_t k = 0; k < n; ++k) {
      if (state_[first + i + k].exchange(kWritten, std::memory_order_acq_rel) != kWritten) {
        cached_.fetch_add(1);
      }
    }
    i += n;
  }
  return Status::Ok();
}

}  // namespace restore
}  // namespace pagewise
