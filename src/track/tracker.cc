// Tracker::Create (backend choice) and the bookkeeping every backend shares:
// argument checks, /proc/self/maps parsing through Env, overlap checks and
// result coalescing.
#include "pagewise/tracker.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>

#include "sys/smaps.h"
#include "track/track_internal.h"
#include "track/tracker_env.h"

namespace pagewise {
namespace track_internal {

std::string RangeString(uint64_t start, uint64_t end) {
  char buf[64];
  snprintf(buf, sizeof(buf), "[0x%" PRIx64 ", 0x%" PRIx64 ")", start, end);
  return buf;
}

bool Vma::shmem() const { return shared && sys::MappingInfo::IsShmemPath(path); }

Result<std::vector<Vma>> ReadMaps(Env* env) {
  PW_ASSIGN_OR_RETURN(std::vector<sys::MappingInfo> maps, sys::ReadMaps(env, 0));
  std::vector<Vma> out;
  out.reserve(maps.size());
  for (sys::MappingInfo& m : maps) {
    Vma v;
    v.start = m.start;
    v.end = m.end;
    v.prot = m.prot();
    v.shared = m.shared;
    v.inode = m.inode;
    v.path = std::move(m.path);
    out.push_back(std::move(v));
  }
  // (The kernel prints VMAs in address order.)
  return out;
}

Result<std::vector<Vma>> CoveringVmas(Env* env, uint64_t start, uint64_t end, const char* op) {
  PW_ASSIGN_OR_RETURN(std::vector<Vma> maps, ReadMaps(env));
  std::vector<Vma> out;
  uint64_t at = start;
  for (const Vma& v : maps) {
    if (v.end <= at) continue;
    if (v.start > at || at >= end) break;
    Vma clipped = v;
    clipped.start = at;
    clipped.end = std::min(v.end, end);
    out.push_back(clipped);
    at = clipped.end;
    if (at >= end) break;
  }
  if (at < end) {
    char where[32];
    snprintf(where, sizeof(where), "0x%" PRIx64, at);
    return Status::InvalidArgument(std::string(op) + " " + RangeString(start, end) +
                                   ": the range is not mapped at " + where +
                                   "; track only memory that is currently mapped (mmap it first)");
  }
  return out;
}

Result<uint64_t> TrackPageSize(Env* env, const std::vector<Vma>& vmas, uint64_t start, uint64_t end,
                               bool hugetlb_ok, const char* backend) {
  bool plain = true;
  for (const Vma& v : vmas) plain = plain && v.anonymous_private();
  if (plain) return static_cast<uint64_t>(PageSize());
  PW_ASSIGN_OR_RETURN(uint64_t page, sys::RangePageSize(env, start, end, "Track"));
  if (page != PageSize() && !hugetlb_ok) {
    return Status::NotSupported("Track " + RangeString(start, end) + ": backend " + backend +
                                " cannot track hugetlbfs memory (huge page size " +
                                std::to_string(page) +
                                "); use the uffd-wp-async backend (or auto), which tracks it in "
                                "whole huge pages");
  }
  return page;
}

bool IsMapped(const std::vector<Vma>& maps, uint64_t addr) {
  auto it = std::upper_bound(maps.begin(), maps.end(), addr,
                             [](uint64_t a, const Vma& v) { return a < v.start; });
  return it != maps.begin() && addr < (it - 1)->end;
}

void ClipToMapped(const std::vector<Vma>& maps, std::vector<PageRange>* ranges) {
  std::vector<PageRange> out;
  for (const PageRange& r : *ranges) {
    auto it = std::upper_bound(maps.begin(), maps.end(), r.start,
                               [](uint64_t a, const Vma& v) { return a < v.start; });
    if (it != maps.begin()) --it;
    for (; it != maps.end() && it->start < r.end; ++it) {
      AppendRange(&out, std::max(r.start, it->start), std::min(r.end, it->end));
    }
  }
  ranges->swap(out);
}

Status CheckRangeArgs(const void* addr, size_t len, const char* op) {
  const uint64_t a = reinterpret_cast<uint64_t>(addr);
  const size_t page = PageSize();
  const std::string what = std::string(op) + " " + RangeString(a, a + len);
  if (addr == nullptr) return Status::InvalidArgument(std::string(op) + ": null address");
  if (len == 0) return Status::InvalidArgument(what + ": empty range; pass len > 0");
  if (a % page != 0) {
    return Status::InvalidArgument(what + ": address is not page aligned (page size " +
                                   std::to_string(page) +
                                   "); pass an address from mmap or "
                                   "round it down to a page boundary");
  }
  if (len % page != 0) {
    return Status::InvalidArgument(what + ": length " + std::to_string(len) +
                                   " is not a multiple of the page size " + std::to_string(page) +
                                   "; round it up to whole pages");
  }
  if (a + len < a) return Status::InvalidArgument(what + ": range wraps around the address space");
  return Status::Ok();
}

Status CheckNoOverlap(const std::vector<PageRange>& tracked, uint64_t start, uint64_t end) {
  auto it = std::lower_bound(tracked.begin(), tracked.end(), end,
                             [](const PageRange& r, uint64_t e) { return r.start < e; });
  // Only the range before `it` can overlap [start, end).
  if (it != tracked.begin()) {
    const PageRange& prev = *(it - 1);
    if (prev.end > start) {
      return Status::AlreadyExists("Track " + RangeString(start, end) +
                                   ": overlaps the already tracked range " +
                                   RangeString(prev.start, prev.end) +
                                   "; Untrack it first or track only the untracked part");
    }
  }
  return Status::Ok();
}

Status RegisterError(const Status& s, uint64_t start, uint64_t end, const std::vector<Vma>& vmas,
                     const char* backend) {
  const std::string where = "Track " + RangeString(start, end);
  if (s.err() == EBUSY) {
    return Status(Code::kAlreadyExists, s.err(),
                  where +
                      ": the memory is already registered with another userfaultfd "
                      "(another Tracker or a userfaultfd user); untrack it there first");
  }
  if (s.err() == EINVAL) {
    std::string kind;
    for (const Vma& v : vmas) {
      if (v.anonymous_private()) continue;
      kind = v.path.empty() ? std::string("shared anonymous") : v.path;
      break;
    }
    return Status(Code::kNotSupported, s.err(),
                  where + ": userfaultfd write-protect refused this memory" +
                      (kind.empty() ? std::string() : " (" + kind + ")") + "; " + backend +
                      " tracks anonymous private memory, memfd/shmem and hugetlbfs (huge-page "
                      "aligned); use the mprotect backend for other mappings");
  }
  return s.WithContext(where + ": registering with userfaultfd");
}

Status NotTracked(uint64_t start, uint64_t end, const std::vector<PageRange>& tracked) {
  std::string list;
  for (const PageRange& r : tracked) {
    if (list.size() > 200) {
      list += ", ...";
      break;
    }
    list += (list.empty() ? "" : ", ") + RangeString(r.start, r.end);
  }
  return Status::NotFound(
      "Untrack " + RangeString(start, end) + ": not a range passed to Track() (tracked: " +
      (list.empty() ? "none" : list) + "); Untrack takes exactly a range that Track() accepted");
}

Result<PageBitmap> PageBitmap::Create(Env* env, size_t pages) {
  PageBitmap b;
  const size_t page = PageSize();
  b.bytes_ = ((pages + 63) / 64 * 8 + page - 1) / page * page;
  PW_ASSIGN_OR_RETURN(void* mem, env->Mmap(nullptr, b.bytes_, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  b.env_ = env;
  b.words_ = static_cast<std::atomic<uint64_t>*>(mem);  // zero-filled by mmap
  b.pages_ = pages;
  return b;
}

PageBitmap& PageBitmap::operator=(PageBitmap&& o) noexcept {
  if (this != &o) {
    if (words_ != nullptr) env_->Munmap(words_, bytes_).IgnoreError();  // nothing to do on failure
    env_ = o.env_;
    words_ = o.words_;
    pages_ = o.pages_;
    bytes_ = o.bytes_;
    o.words_ = nullptr;
    o.pages_ = o.bytes_ = 0;
  }
  return *this;
}

PageBitmap::~PageBitmap() {
  if (words_ != nullptr) env_->Munmap(words_, bytes_).IgnoreError();  // nothing to do on failure
}

void PageBitmap::SetRange(size_t first, size_t last_excl) const {
  for (size_t p = first; p < last_excl;) {
    if (p % 64 == 0 && last_excl - p >= 64) {
      words_[p / 64].store(~uint64_t{0}, std::memory_order_release);
      p += 64;
    } else {
      Set(p++);
    }
  }
}

void PageBitmap::ClearAll() const {
  for (size_t w = 0; w < words(); ++w) words_[w].store(0, std::memory_order_relaxed);
}

}  // namespace track_internal

namespace {

Result<std::unique_ptr<Tracker>> CreateBackend(TrackBackend b, Env* env, const KernelFeatures& f) {
  switch (b) {
    case TrackBackend::kUffdWpAsync:
      return track_internal::CreateUffdWpAsync(env, f);
    case TrackBackend::kUffdWp:
      return track_internal::CreateUffdWp(env, f);
    case TrackBackend::kMprotect:
      return track_internal::CreateMprotect(env, f);
    case TrackBackend::kSoftDirty:
      return track_internal::CreateSoftDirty(env, f);
    case TrackBackend::kTwoStep:
      return track_internal::CreateTwoStep(env, f);
    case TrackBackend::kAuto:
      break;
  }
  return Status::Internal("CreateBackend called with auto");
}

}  // namespace

Result<std::unique_ptr<Tracker>> Tracker::Create(const TrackerOptions& options) {
  return CreateTracker(options, Env::Default());
}

Result<std::unique_ptr<Tracker>> CreateTracker(const TrackerOptions& options, Env* env) {
  const KernelFeatures& features = Features();
  const std::vector<BackendInfo> infos = DescribeBackends(features);
  // In DescribeBackends' order.
  const TrackBackend concrete[] = {TrackBackend::kUffdWpAsync, TrackBackend::kUffdWp,
                                   TrackBackend::kMprotect, TrackBackend::kSoftDirty,
                                   TrackBackend::kTwoStep};

  if (options.backend == TrackBackend::kAuto) {
    // Best atomic backend first; soft-dirty is never chosen automatically.
    for (size_t i = 0; i < 3; ++i) {
      if (infos[i].available) return CreateBackend(concrete[i], env, features);
    }
    std::string reasons;
    for (size_t i = 0; i < 3; ++i) reasons += "; " + infos[i].name + ": " + infos[i].reason;
    return Status::NotSupported("no atomic tracking backend is available" + reasons);
  }
  for (size_t i = 0; i < std::size(concrete); ++i) {
    if (concrete[i] != options.backend) continue;
    if (infos[i].available) return CreateBackend(concrete[i], env, features);
    std::string alternatives;
    for (size_t j = 0; j < 3; ++j) {
      if (infos[j].available) alternatives += (alternatives.empty() ? "" : ", ") + infos[j].name;
    }
    return Status::NotSupported("tracking backend '" + infos[i].name + "' is not available here: " +
                                infos[i].reason + "; use one of: " + alternatives + " (or 'auto')");
  }
  return Status::InvalidArgument("unknown tracking backend value " +
                                 std::to_string(static_cast<int>(options.backend)) +
                                 "; valid: auto, uffd-wp-async, uffd-wp, mprotect, soft-dirty, "
                                 "two-step");
}

}  // namespace pagewise
