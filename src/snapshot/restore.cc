// RestoreEager: an image chain back into memory, all at once.
//
// Each region is cut into chunks; for each chunk the chain says which pages
// hold data (Image::ClassifyRuns) and runs of data pages are read straight into
// the destination (Image::Read checks each chunk's checksum). Zero and
// absent pages are skipped in fresh mappings (they stay unpopulated) and
// cleared in existing ones. Regions recorded with a huge page size
// (hugetlbfs) go back into hugetlbfs memory of that size: fresh mappings are
// MAP_HUGETLB from the kernel's pool of that size (reserved at mmap, so an
// empty pool fails there, with the fix in the message); existing memory must
// have that page size (smaps), else nothing is touched.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "image/image_env.h"
#include "pagewise/snapshot.h"
#include "snapshot/internal.h"
#include "snapshot/snapshot_env.h"
#include "sys/smaps.h"

namespace pagewise {
namespace {

constexpr uint64_t kChunkBytes = 4 << 20;

// Unmaps what it holds unless dismissed: a failed restore leaves nothing.
class MappingGuard {
 public:
  explicit MappingGuard(Env* env) : env_(env) {}
  ~MappingGuard() {
    for (auto& [p, len] : maps_) {
      if (p != nullptr) env_->Munmap(p, len).IgnoreError();  // best effort on the error path
    }
  }
  void Add(size_t i, void* p, size_t len) {
    if (maps_.size() <= i) maps_.resize(i + 1, {nullptr, 0});
    maps_[i] = {p, len};
  }
  void Forget(size_t i) { maps_[i] = {nullptr, 0}; }
  void DismissAll() { maps_.clear(); }

 private:
  Env* env_;
  std::vector<std::pair<void*, size_t>> maps_;
};

// True if [start, start+len) is entirely mapped; *private_anon says whether
// all of it is private anonymous memory (zero runs may then be dropped with
// MADV_DONTNEED instead of written).
Status CheckMapped(const std::vector<MappingInfo>& maps, const Region& r, size_t index,
                   bool* private_anon) {
  uint64_t covered = r.address;
  const uint64_t end = r.address + r.length;
  *private_anon = true;
  for (const MappingInfo& m : maps) {
    if (m.end <= covered || m.start >= end) continue;
    if (m.start > covered) break;
    if (m.shared || (!m.path.empty() && m.path[0] == '/')) *private_anon = false;
    if ((m.prot & PROT_WRITE) == 0) *private_anon = false;
    covered = m.end;
    if (covered >= end) break;
  }
  if (covered < end) {
    return Status::FailedPrecondition(
        "RestoreEager: region " + std::to_string(index) + " '" + r.name + "' [" +
        HexAddr(r.address) + ", " + HexAddr(end) + ") is not mapped at " + HexAddr(covered) +
        "; kReplaceExisting/kOverwriteInPlace need the original mapping (use kOriginal or "
        "kFresh to create one)");
  }
  return Status::Ok();
}

// Existing memory for a huge-page region must have its page size: reading
// 2 MiB pages into 4 KiB memory would work but lose what the image says, and
// the reverse would not be aligned.
Status CheckPageSize(Env* env, const Region& r, size_t index) {
  PW_ASSIGN_OR_RETURN(uint64_t mapped,
                      sys::RangePageSize(env, r.address, r.address + r.length, "RestoreEager"));
  if (mapped == r.page_size) return Status::Ok();
  return Status::FailedPrecondition(
      "RestoreEager: region " + std::to_string(index) + " '" + r.name + "' was recorded with " +
      "page size " + std::to_string(r.page_size) + " but the memory at " + HexAddr(r.address) +
      " has page size " + std::to_string(mapped) + "; map hugetlbfs memory of " +
      std::to_string(r.page_size) + "-byte pages there, or restore with kFresh");
}

struct Job {
  uint32_t region;
  uint64_t offset;
  uint64_t len;
};

class RestoredMemoryImpl final : public RestoredMemory {
 public:
  RestoredMemoryImpl(std::vector<RestoredRegion> regions, EagerRestoreStats stats, Env* env)
      : regions_(std::move(regions)), stats_(stats), env_(env) {}
  ~RestoredMemoryImpl() override {
    for (const RestoredRegion& r : regions_) {
      if (r.owned && r.data != nullptr) {
        env_->Munmap(r.data, r.info.length).IgnoreError();  // destructor: nowhere to report
      }
    }
  }

  const std::vector<RestoredRegion>& regions() const override { return regions_; }
  const EagerRestoreStats& stats() const override { return stats_; }
  std::vector<RestoredRegion> Release() override {
    std::vector<RestoredRegion> out = std::move(regions_);
    regions_.clear();
    return out;
  }

 private:
  std::vector<RestoredRegion> regions_;
  EagerRestoreStats stats_;
  Env* env_;
};

}  // namespace

Result<std::unique_ptr<RestoredMemory>> RestoreEager(const std::string& path,
                                                     const EagerRestoreOptions& options) {
  return RestoreEager(path, options, Env::Default());
}

Result<std::unique_ptr<RestoredMemory>> RestoreEager(const Image& image,
                                                     const EagerRestoreOptions& options) {
  return RestoreEager(image, options, Env::Default());
}

Result<std::unique_ptr<RestoredMemory>> RestoreEager(const std::string& path,
                                                     const EagerRestoreOptions& options, Env* env) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> image, OpenImage(path, ImageOpenOptions{}, env));
  return RestoreEager(*image, options, env);
}

Result<std::unique_ptr<RestoredMemory>> RestoreEager(const Image& image,
                                                     const EagerRestoreOptions& options, Env* env) {
  const uint64_t t0 = NowNs();
  const std::vector<Region>& regions = image.regions();
  const uint64_t page = PageSize();
  const RestorePlacement placement = options.placement;
  if (options.threads < 1) return Status::InvalidArgument("RestoreEager: threads must be >= 1");
  if (regions.empty()) return Status::InvalidArgument("RestoreEager: the image has no regions");
  for (size_t i = 0; i < regions.size(); ++i) {
    const Region& r = regions[i];
    if (r.page_size != page && (r.page_size < page || (r.page_size & (r.page_size - 1)) != 0 ||
                                r.page_size > snapshot_internal::kMaxImagePageSize)) {
      return Status::Corruption("RestoreEager: region " + std::to_string(i) + " has page size " +
                                std::to_string(r.page_size));
    }
    if (r.length == 0 || r.length % r.page_size != 0) {
      return Status::Corruption("RestoreEager: region " + std::to_string(i) + " has a bad length " +
                                std::to_string(r.length));
    }
    if (placement != RestorePlacement::kFresh && (r.address == 0 || r.address % r.page_size != 0)) {
      return Status::InvalidArgument("RestoreEager: region " + std::to_string(i) + " '" + r.name +
                                     "' has no usable recorded address; restore it with kFresh");
    }
  }

  const bool in_place = placement == RestorePlacement::kOverwriteInPlace;
  std::vector<bool> drop_zero(regions.size(), false);  // in place: MADV_DONTNEED zero runs
  if (placement == RestorePlacement::kReplaceExisting || in_place) {
    PW_ASSIGN_OR_RETURN(std::vector<MappingInfo> maps, ReadSelfMaps(env));
    for (size_t i = 0; i < regions.size(); ++i) {
      bool anon = false;
      PW_RETURN_IF_ERROR(CheckMapped(maps, regions[i], i, &anon));
      drop_zero[i] = anon;
      if (regions[i].page_size != page) PW_RETURN_IF_ERROR(CheckPageSize(env, regions[i], i));
    }
  }
  if (in_place) {
    // Catch corruption before the first byte of live memory changes.
    VerifyError ve;
    Status vs = image.Verify(&ve);
    if (!vs.ok()) {
      return vs.WithContext(
          "RestoreEager: the chain failed verification; memory was not "
          "touched");
    }
  }

  // Destinations.
  MappingGuard guard(env);
  std::vector<char*> dst(regions.size(), nullptr);
  for (size_t i = 0; i < regions.size(); ++i) {
    const Region& r = regions[i];
    if (in_place) {
      dst[i] = reinterpret_cast<char*>(r.address);
      continue;
    }
    void* hint = nullptr;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    if (r.page_size != page) {
      // Reserved now (no MAP_NORESERVE): a short pool fails here, not with
      // SIGBUS in the middle of the fill.
      flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB |
              (std::countr_zero(r.page_size) << MAP_HUGE_SHIFT);
    }
    if (placement == RestorePlacement::kOriginal) {
      hint = reinterpret_cast<void*>(r.address);
      flags |= MAP_FIXED_NOREPLACE;
    }
    Result<void*> m = env->Mmap(hint, r.length, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (!m.ok() && r.page_size != page) {
      return m.status().WithContext(
          "RestoreEager: mapping region " + std::to_string(i) + " '" + r.name + "' (" +
          std::to_string(r.length / r.page_size) + " huge pages of " + std::to_string(r.page_size) +
          " bytes) from the hugetlbfs pool: add free huge pages " +
          "(/sys/kernel/mm/hugepages/hugepages-" + std::to_string(r.page_size >> 10) +
          "kB/nr_hugepages; `pagewise probe` shows the pools)");
    }
    if (!m.ok()) {
      return m.status().WithContext("RestoreEager: mapping " + std::to_string(r.length) +
                                    " bytes for region " + std::to_string(i) + " '" + r.name + "'" +
                                    (hint ? " at its recorded address " + HexAddr(r.address) : ""));
    }
    guard.Add(i, *m, r.length);
    if (hint != nullptr && *m != hint) {
      // Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and map elsewhere.
      return Status::AlreadyExists("RestoreEager: the address " + HexAddr(r.address) +
                                   " of region " + std::to_string(i) + " is not free");
    }
    dst[i] = static_cast<char*>(*m);
  }

  // Fill.
  std::vector<Job> jobs;
  for (uint32_t i = 0; i < regions.size(); ++i) {
    // Jobs are whole pages of the region (huge pages up to 16 MiB).
    const uint64_t chunk = std::max<uint64_t>(kChunkBytes, regions[i].page_size);
    for (uint64_t off = 0; off < regions[i].length; off += chunk) {
      jobs.push_back({i, off, std::min(chunk, regions[i].length - off)});
    }
  }
  std::atomic<uint64_t> data_pages{0}, zero_pages{0};
  Status fs = snapshot_internal::ParallelFor(options.threads, jobs.size(), [&](size_t j) {
    const Job& job = jobs[j];
    std::vector<Image::SourceRun> runs;
    PW_RETURN_IF_ERROR(image.ClassifyRuns(job.region, job.offset, job.len, &runs));
    uint64_t covered = 0;
    for (const Image::SourceRun& run : runs) {
      if (run.offset != job.offset + covered || run.length % page != 0 ||
          run.length > job.len - covered) {
        return Status::Internal("Image::ClassifyRuns returned run [" + HexAddr(run.offset) + ", +" +
                                HexAddr(run.length) + ") out of order for region " +
                                std::to_string(job.region));
      }
      covered += run.length;
      char* d = dst[job.region] + run.offset;
      const uint64_t n = run.length / page;
      if (run.kind == PageSourceKind::kData) {
        PW_RETURN_IF_ERROR(image.Read(job.region, run.offset, d, run.length));
        data_pages.fetch_add(n, std::memory_order_relaxed);
        continue;
      }
      zero_pages.fetch_add(n, std::memory_order_relaxed);
      if (in_place) {
        if (drop_zero[job.region]) {
          PW_RETURN_IF_ERROR(env->Madvise(d, run.length, MADV_DONTNEED));
        } else {
          std::memset(d, 0, run.length);
        }
      }
      // Fresh mappings: leave zero pages unpopulated.
    }
    if (covered != job.len) {
      return Status::Internal("Image::ClassifyRuns covered " + std::to_string(covered) + " of " +
                              std::to_string(job.len) + " bytes of region " +
                              std::to_string(job.region));
    }
    return Status::Ok();
  });
  if (!fs.ok()) {
    if (in_place) {
      return fs.WithContext(
          "RestoreEager (in place): the regions are PARTIALLY restored and must not be used; "
          "restore again or discard them");
    }
    return fs.WithContext("RestoreEager: nothing was restored (new mappings removed)");
  }

  if (options.apply_prot && !in_place) {
    for (size_t i = 0; i < regions.size(); ++i) {
      const uint32_t prot = regions[i].prot;
      if (prot == 0 || prot == (PROT_READ | PROT_WRITE)) continue;
      PW_RETURN_IF_ERROR(
          env->Mprotect(dst[i], regions[i].length, static_cast<int>(prot))
              .WithContext("RestoreEager: applying region " + std::to_string(i) + "'s protection"));
    }
  }

  std::vector<RestoredRegion> out(regions.size());
  if (placement == RestorePlacement::kReplaceExisting) {
    for (size_t i = 0; i < regions.size(); ++i) {
      void* target = reinterpret_cast<void*>(regions[i].address);
      Result<void*> moved = env->Mremap(dst[i], regions[i].length, regions[i].length,
                                        MREMAP_MAYMOVE | MREMAP_FIXED, target);
      if (!moved.ok()) {
        return moved.status().WithContext(
            "RestoreEager: moving region " + std::to_string(i) + " over " +
            HexAddr(regions[i].address) + " failed; " +
            (i == 0 ? std::string("no region was replaced")
                    : "regions 0.." + std::to_string(i - 1) + " were already replaced") +
            ", the others keep their old contents");
      }
      guard.Forget(i);  // the staging mapping is now the region itself
      dst[i] = static_cast<char*>(*moved);
    }
  }
  const bool owned =
      placement == RestorePlacement::kFresh || placement == RestorePlacement::kOriginal;
  for (size_t i = 0; i < regions.size(); ++i) out[i] = {regions[i], dst[i], owned};
  guard.DismissAll();

  EagerRestoreStats stats;
  stats.data_pages = data_pages.load();
  stats.zero_pages = zero_pages.load();
  stats.bytes_read = stats.data_pages * page;
  stats.elapsed_ns = NowNs() - t0;
  return std::unique_ptr<RestoredMemory>(
      std::make_unique<RestoredMemoryImpl>(std::move(out), stats, env));
}

}  // namespace pagewise
