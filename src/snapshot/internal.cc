// Shared snapshot helpers: validation, range arithmetic, presence scan,
// zero detection, parallel-for.
#include "snapshot/internal.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>

#include "base/bytes.h"
#include "sys/smaps.h"

namespace pagewise::snapshot_internal {

Status ValidateRegions(const std::vector<Region>& regions, const char* what, Env* huge_env) {
  const uint64_t base = PageSize();
  if (regions.empty()) return Status::InvalidArgument(std::string(what) + ": no regions given");
  std::vector<size_t> order(regions.size());
  std::iota(order.begin(), order.end(), 0);
  for (size_t i = 0; i < regions.size(); ++i) {
    const Region& r = regions[i];
    const std::string where = std::string(what) + ": region " + std::to_string(i) + " [" +
                              HexAddr(r.address) + ", +" + std::to_string(r.length) + ")";
    const uint64_t page = r.page_size;
    if (page != base && huge_env == nullptr) {
      return Status::NotSupported(where + " has page size " + std::to_string(r.page_size) +
                                  "; only the base page size " + std::to_string(base) +
                                  " is supported here (hugetlbfs regions are not)");
    }
    if (page < base || (page & (page - 1)) != 0 || page > kMaxImagePageSize) {
      return Status::InvalidArgument(
          where + " has page size " + std::to_string(page) + ": it must be a power of two from " +
          std::to_string(base) + " to " + std::to_string(kMaxImagePageSize) +
          " bytes (images cannot hold 1 GiB pages: snapshot such memory through a 2 MiB pool)");
    }
    if (r.length == 0 || r.address % page != 0 || r.length % page != 0) {
      return Status::InvalidArgument(where + " must be non-empty and aligned to its page size " +
                                     std::to_string(page));
    }
    if (r.address + r.length < r.address) {
      return Status::InvalidArgument(where + " wraps around the address space");
    }
    if (page != base) {
      PW_ASSIGN_OR_RETURN(uint64_t mapped,
                          sys::RangePageSize(huge_env, r.address, r.address + r.length, what));
      if (mapped != page) {
        return Status::InvalidArgument(
            where + " says page size " + std::to_string(page) + " but the memory there has page " +
            "size " + std::to_string(mapped) + " (smaps KernelPageSize): set page_size to " +
            std::to_string(mapped) + ", or describe the region with RegionFromMaps");
      }
    }
  }
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return regions[a].address < regions[b].address; });
  for (size_t k = 1; k < order.size(); ++k) {
    const Region& a = regions[order[k - 1]];
    const Region& b = regions[order[k]];
    if (a.address + a.length > b.address) {
      return Status::InvalidArgument(
          std::string(what) + ": regions " + std::to_string(order[k - 1]) + " and " +
          std::to_string(order[k]) + " overlap at " + HexAddr(b.address));
    }
  }
  return Status::Ok();
}

std::vector<Region> NormalizeRegions(std::vector<Region> regions) {
  if (regions.size() < 2) return regions;
  for (const Region& r : regions) {
    if (r.offset != 0) return regions;
  }
  uint64_t off = 0;
  for (Region& r : regions) {
    r.offset = off;
    off += r.length;
  }
  return regions;
}

std::vector<Piece> Intersect(const std::vector<PageRange>& ranges,
                             const std::vector<Region>& regions) {
  std::vector<uint32_t> order(regions.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return regions[a].address < regions[b].address; });
  std::vector<Piece> out;
  for (uint32_t idx : order) {
    const Region& reg = regions[idx];
    const uint64_t rs = reg.address, re = reg.address + reg.length;
    // First range that ends after the region starts.
    auto it = std::upper_bound(ranges.begin(), ranges.end(), rs,
                               [](uint64_t v, const PageRange& r) { return v < r.end; });
    const uint64_t ps = reg.page_size == 0 ? PageSize() : reg.page_size;
    for (; it != ranges.end() && it->start < re; ++it) {
      uint64_t s = std::max(rs, it->start), e = std::min(re, it->end);
      if (s >= e) continue;
      s = rs + (s - rs) / ps * ps;  // whole pages of the region
      e = std::min(re, rs + (e - rs + ps - 1) / ps * ps);
      Piece* last = out.empty() ? nullptr : &out.back();
      if (last != nullptr && last->region == idx && last->offset + last->len >= s - rs) {
        last->len = std::max(last->offset + last->len, e - rs) - last->offset;
      } else {
        out.push_back({idx, s - rs, e - s});
      }
    }
  }
  return out;
}

std::vector<Piece> Split(const std::vector<Piece>& pieces, uint64_t max_bytes) {
  std::vector<Piece> out;
  for (const Piece& p : pieces) {
    for (uint64_t off = 0; off < p.len; off += max_bytes) {
      out.push_back({p.region, p.offset + off, std::min(max_bytes, p.len - off)});
    }
  }
  return out;
}

PresenceScanner PresenceScanner::Open(Env* env) {
  PresenceScanner s;
  Result<sys::PagemapScanner> r = sys::PagemapScanner::Open(env);
  if (!r.ok()) return s;  // no pagemap: treat every page as populated
  // Probe once on an empty-ish range to learn whether the ioctl exists.
  PagemapScanArgs args;
  static const char probe_page[1] = {0};
  const uint64_t page = PageSize();
  args.start = reinterpret_cast<uint64_t>(probe_page) / page * page;
  args.end = args.start + page;
  args.category_anyof_mask = sys::page_is::kPresent;
  args.return_mask = sys::page_is::kPresent;
  PageRegion vec[1];
  if (!r->ScanOnce(args, vec, 1).ok()) return s;
  s.scanner_ = std::move(r).value();
  s.enabled_ = true;
  return s;
}

Status PresenceScanner::Populated(uint64_t start, uint64_t end, std::vector<PageRange>* out) const {
  if (!enabled_) {
    out->push_back({start, end});
    return Status::Ok();
  }
  PagemapScanArgs args;
  args.start = start;
  args.end = end;
  args.category_anyof_mask = sys::page_is::kPresent | sys::page_is::kSwapped;
  args.return_mask = sys::page_is::kPresent | sys::page_is::kSwapped | sys::page_is::kPfnZero;
  std::vector<PageRegion> regions;
  PW_RETURN_IF_ERROR(scanner_.ScanAll(args, &regions));
  std::vector<PageRange> found;
  for (const PageRegion& r : regions) {
    // A present page mapping the shared zero page reads as zero.
    if ((r.categories & sys::page_is::kPfnZero) != 0) continue;
    // The kernel may return a walk_end before the end of the last region it
    // reported, so the next ioctl reports (part of) it again: clip.
    uint64_t s = r.start;
    if (!found.empty()) s = std::max(s, found.back().end);
    if (s >= r.end) continue;
    if (!found.empty() && found.back().end == s) {
      found.back().end = r.end;
    } else {
      found.push_back({s, r.end});
    }
  }
  out->insert(out->end(), found.begin(), found.end());
  return Status::Ok();
}

Status ParallelFor(int threads, size_t n, const std::function<Status(size_t)>& fn) {
  if (threads <= 1 || n <= 1) {
    for (size_t i = 0; i < n; ++i) PW_RETURN_IF_ERROR(fn(i));
    return Status::Ok();
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first;
  auto worker = [&] {
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) return;
      Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = std::move(s);
        failed.store(true, std::memory_order_relaxed);
      }
    }
  };
  const size_t count = std::min<size_t>(static_cast<size_t>(threads), n);
  std::vector<std::thread> pool;
  pool.reserve(count - 1);
  for (size_t t = 1; t < count; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  return first;
}

}  // namespace pagewise::snapshot_internal
