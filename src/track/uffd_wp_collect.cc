// The uffd-wp backend's Collect (uffd_wp_impl.h; the protocol is in
// uffd_wp_tracker.h): sweep for pages that became writable without a fault,
// take the faulted pages and re-protect everything reported under the fault
// lock, then report the pages still mapped.
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "sys/env.h"
#include "sys/pagemap.h"
#include "track/track_internal.h"
#include "track/uffd_wp_impl.h"

namespace pagewise::track_internal {
namespace {

constexpr uint64_t kPmUffdWp = 1ULL << 57;  // /proc/pid/pagemap: pte is uffd write-protected

}  // namespace

// Marks in r->scratch every page of r that is writable without having
// faulted: empty ptes (MADV_DONTNEED dropped them and their protection),
// whole page-table holes, and pages written since such a drop.
Status UffdWpTrackerImpl::Sweep(Range* r, const std::vector<Vma>* maps) {
  const uint64_t page = PageSize();
  if (scanner_) {
    PagemapScanArgs args;
    args.start = r->start;
    args.end = r->end;
    // The fast path (mask == return == WRITTEN) counts empty ptes and holes
    // as written; no WP_MATCHING: sync VMAs cannot be re-armed by the scan.
    args.category_mask = sys::page_is::kWritten;
    args.return_mask = sys::page_is::kWritten;
    std::vector<PageRegion> regions;
    Status s = scanner_->ScanAll(args, &regions);
    for (const PageRegion& reg : regions) {
      r->scratch.SetRange((reg.start - r->start) / page, (reg.end - r->start) / page);
    }
    return s;
  }
  // /proc/self/pagemap: an entry without PM_UFFD_WP is an unprotected pte,
  // an empty pte or a hole. Only mapped parts are read: an unmapped address
  // also reads as 0, and must not be reported.
  std::vector<PageRange> parts = {{r->start, r->end}};
  ClipToMapped(*maps, &parts);
  std::vector<uint64_t> entries(4096);
  for (const PageRange& part : parts) {
    for (uint64_t a = part.start; a < part.end;) {
      const size_t n = std::min<size_t>(entries.size(), (part.end - a) / page);
      PW_RETURN_IF_ERROR(
          ReadFully(env_, pagemap_fd_, entries.data(), n * 8, static_cast<off_t>(a / page * 8)));
      for (size_t i = 0; i < n; ++i) {
        if ((entries[i] & kPmUffdWp) == 0) r->scratch.Set((a - r->start) / page + i);
      }
      a += n * page;
    }
  }
  return Status::Ok();
}

// Longer than our ~80 lines: its two numbered steps (the sweep, then
// taking the faulted pages and re-protecting under the fault lock) are one
// protocol that must not lose a write between them; apart, the invariant
// that joins them would be nowhere in view.
Status UffdWpTrackerImpl::Collect(std::vector<PageRange>* written) {
  PW_RETURN_IF_ERROR(CheckProcess("Collect"));
  std::lock_guard<std::mutex> api(api_mu_);
  const uint64_t page = PageSize();
  Status first_error;
  auto note = [&first_error](const Status& s) {
    if (!s.ok() && first_error.ok()) first_error = s;
  };
  // 1. Sweep without the fault lock (see Sweep). A page that loses its
  // protection after its sweep is found by the next collect's sweep.
  std::vector<Vma> maps;
  if (!scanner_) {
    Result<std::vector<Vma>> m = ReadMaps(env_);
    if (!m.ok()) return m.status().WithContext("Collect");  // nothing taken yet
    maps = std::move(m).value();
  }
  for (const auto& r : ranges_) {
    r->scratch.ClearAll();
    note(Sweep(r.get(), &maps).WithContext("Collect " + RangeString(r->start, r->end) + ": sweep"));
    if (!wp_unpopulated_) {
      ForEachRun(r->scratch,
                 [&](size_t a, size_t b) { ReadFault(r->start + a * page, r->start + b * page); });
    }
  }
  // 2. Under the fault lock: take the faulted pages and re-protect every
  // page we are about to report. Nothing here allocates or writes tracked
  // memory (the bitmaps are the tracker's own mappings).
  bool any_extra = false;
  {
    std::lock_guard<std::mutex> lock(fs_->mu);
    if (fs_->error != 0) {
      char where[48];
      snprintf(where, sizeof(where), " at 0x%" PRIx64, fs_->error_addr);
      note(ErrnoStatus(fs_->error, std::string("tracker thread: ") + fs_->error_op + where));
      fs_->error = 0;
    }
    for (const auto& r : ranges_) {
      for (size_t w = 0; w < r->bits.words(); ++w) {
        const uint64_t taken = r->bits.word(w).exchange(0, std::memory_order_acq_rel);
        const uint64_t swept = r->scratch.word(w).load(std::memory_order_relaxed);
        r->extra.word(w).store(taken & ~swept, std::memory_order_relaxed);
        any_extra |= (taken & ~swept) != 0;
        r->scratch.word(w).store(swept | taken, std::memory_order_relaxed);
      }
      Range* rr = r.get();
      ForEachRun(r->scratch, [&](size_t a, size_t b) {
        Status s = uffd_.WriteProtect(rr->start + a * page, (b - a) * page, /*wp=*/true);
        if (s.ok()) return;
        if (s.err() == ENOENT) return;  // unmapped meanwhile: nothing left to protect
        // Not re-armed: keep the pages written so the next collect reports
        // them again and retries; they are still reported now.
        rr->bits.SetRange(a, b);
        note(s.WithContext("Collect: re-protecting"));
      });
    }
  }
  // 2b. Faulted pages the sweep did not see were either written after the
  // sweep or unmapped since their fault. Report only those still mapped; if
  // the maps cannot be read, keep them pending for the next collect.
  if (any_extra) {
    Result<std::vector<Vma>> m = ReadMaps(env_);
    if (!m.ok()) note(m.status().WithContext("Collect"));
    for (const auto& r : ranges_) {
      ForEachRun(r->extra, [&](size_t a, size_t b) {
        for (size_t p = a; p < b; ++p) {
          if (!m.ok()) {
            r->bits.Set(p);
            r->scratch.word(p / 64).fetch_and(~(uint64_t{1} << (p % 64)),
                                              std::memory_order_relaxed);
          } else if (!IsMapped(*m, r->start + p * page)) {
            r->scratch.word(p / 64).fetch_and(~(uint64_t{1} << (p % 64)),
                                              std::memory_order_relaxed);
          }
        }
      });
    }
  }
  // 3. Report.
  const size_t from = written->size();
  for (const auto& r : ranges_) {
    ForEachRun(r->scratch, [&](size_t a, size_t b) {
      AppendRange(written, r->start + a * page, r->start + b * page);
    });
  }
  SortAndCoalesce(written, from);
  stats_.collects++;
  for (size_t i = from; i < written->size(); ++i)
    stats_.pages_reported += (*written)[i].pages(page);
  return first_error;
}

}  // namespace pagewise::track_internal
