// Snapshots of this process's memory into page images, and eager restore.
//
// A snapshot captures regions of the calling process (pagewise::Region:
// address, length, kind, prot, name) into an image file (pagewise/image.h):
//   - SnapshotFull() writes every page of the regions: a base image.
//   - SnapshotIncremental() writes a layer on top of a parent image holding
//     ONLY the pages a Tracker reported written since the parent; pages that
//     now read as zero (e.g. dropped with MADV_DONTNEED) are recorded as zero
//     so that they override the parent's content.
//   - SnapshotChain owns a Tracker over the regions and produces a base and
//     any number of layers: Base(path), then Layer(path), Layer(path), ...
// Snapshots stream: page contents go from the mapping straight into the
// ImageWriter in batches; no copy of the regions is made.
//
// RestoreEager() reads an image chain back into memory, byte-identical, at
// fresh addresses or at the recorded ones (see RestorePlacement for what
// memory looks like after an error).
//
// Consistency: a snapshot reads live memory. Pages written by other threads
// while a snapshot runs may be captured torn (half old, half new). With a
// SnapshotChain such pages are reported again by the next Layer(), so the
// chain converges; for a self-consistent single image, quiesce the writers.
//
// Thread safety: SnapshotFull/SnapshotIncremental/RestoreEager are
// reentrant (independent calls may run concurrently on distinct outputs).
// A SnapshotChain is NOT thread-safe: call its methods from one thread at a
// time (other threads may keep writing the tracked regions). RestoredMemory
// is a plain owner: one thread at a time.
#ifndef PAGEWISE_SNAPSHOT_H_
#define PAGEWISE_SNAPSHOT_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/image.h"
#include "pagewise/status.h"
#include "pagewise/tracker.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// ---- describing regions ------------------------------------------------------

// A Region for [addr, addr+len) of this process. No system call; the
// arguments are checked by the snapshot functions, not here.
Region MakeRegion(const void* addr, size_t len, RegionKind kind = RegionKind::kAnonymous,
                  uint32_t prot = PROT_READ | PROT_WRITE, std::string name = {});

// One line of /proc/self/maps.
struct MappingInfo {
  uint64_t start = 0;
  uint64_t end = 0;
  uint32_t prot = 0;    // PROT_* from the rwx bits
  bool shared = false;  // 's' (MAP_SHARED) rather than 'p'
  uint64_t offset = 0;  // file offset
  uint64_t inode = 0;
  std::string path;  // file, "[heap]", "/memfd:name (deleted)", or empty
};

// Reads and parses /proc/self/maps. Errors: kIoError if the file cannot be
// read, kInternal on a line that does not parse (the message quotes it).
Result<std::vector<MappingInfo>> ReadSelfMaps();

// Describes [addr, addr+len) from /proc/self/maps: kind from the first
// mapping (private without a file: kAnonymous; shared memfd/shmem/dev-zero:
// kShared; otherwise kFile), prot the union of the mappings' protections
// (under the mprotect tracking backend pages may read as PROT_READ only),
// name the mapping's path unless `name` is given, page_size the memory's
// (smaps KernelPageSize: 2 MiB for such hugetlbfs memory; SnapshotFull and
// SnapshotIncremental record it in the image). Errors: kInvalidArgument
// for an unaligned or empty range, or one that mixes page sizes or is not
// aligned to its huge page size; kNotFound when part of the range is not
// mapped (the message names the first hole).
Result<Region> RegionFromMaps(const void* addr, size_t len, std::string name = {});

// ---- snapshots ---------------------------------------------------------------

struct SnapshotOptions {
  Compression compression = Compression::kZstd;
  int level = 1;      // compressor level (see ImageWriteOptions)
  bool dedup = true;  // store identical pages once
  // Uncompressed bytes per data chunk (see ImageWriteOptions::chunk_bytes);
  // 0 keeps the writer's default.
  uint32_t chunk_bytes = 0;
  // Threads calling ImageWriter::AddPages concurrently (>= 1).
  int threads = 1;
  // Bytes handed to the writer per AddPages call (rounded to pages).
  size_t batch_bytes = 1 << 20;
  // For kAnonymous regions, ask PAGEMAP_SCAN which pages were never
  // populated (or map the shared zero page) and record them as zero without
  // reading them (a base image leaves them absent, which also reads as
  // zero). Conservative: pages that look swapped are read, and so are empty
  // pages of tracked memory (the tracker's userfaultfd markers look
  // swapped); the writer still stores them as zero. Falls back to reading
  // every page where PAGEMAP_SCAN is missing.
  bool skip_unpopulated = true;
};

struct SnapshotStats {
  ImageStats image;                // the committed image's own statistics
  uint64_t pages_read = 0;         // pages copied from memory into the writer
  uint64_t pages_unpopulated = 0;  // pages recorded (or left) zero without reading
  uint64_t elapsed_ns = 0;         // wall time of the whole call
};

// Writes every page of `regions` to a new base image at `out_path`.
// Preconditions: regions are page aligned, non-empty, non-overlapping,
// mapped readable in this process, page_size the memory's page size
// (PageSize(), or a hugetlbfs huge page size up to 16 MiB, checked against
// smaps: a mismatch is kInvalidArgument; RegionFromMaps fills it in), the
// address and length multiples of it. If every region
// has offset 0 and there are several, they get consecutive flat
// offsets in the given order (the same rule SnapshotIncremental applies).
// Errors: kInvalidArgument for bad regions; I/O errors from the writer
// (kNoSpace, kIoError...). On any error nothing exists at `out_path` (an
// earlier file there is left untouched).
Result<SnapshotStats> SnapshotFull(const std::vector<Region>& regions, const std::string& out_path,
                                   const SnapshotOptions& options = {});

// Writes a layer at `out_path` on top of `parent_path` holding exactly the
// pages of `written` (absolute page ranges, as Tracker::Collect returns;
// unsorted and overlapping input is fine) that fall inside `regions`; parts
// of `written` outside every region are ignored. Pages that read as zero
// are recorded as zero, overriding the parent. `regions` must be the
// regions of the parent chain (same addresses and lengths, same order).
// Errors as SnapshotFull, plus the parent's (kNotFound/kCorruption) and
// kInvalidArgument when a range is unaligned or the regions differ from
// the parent's. On error nothing exists at `out_path`.
Result<SnapshotStats> SnapshotIncremental(const std::vector<PageRange>& written,
                                          const std::vector<Region>& regions,
                                          const std::string& parent_path,
                                          const std::string& out_path,
                                          const SnapshotOptions& options = {});

struct SnapshotChainOptions {
  TrackerOptions tracker;    // backend choice
  SnapshotOptions snapshot;  // used for the base and every layer
};

// A tracker over fixed regions plus the path of the newest image: Base()
// writes a full image, each Layer() the pages written since the previous
// image. Paths are made absolute, so layers find their parents whatever
// the working directory is later.
class SnapshotChain {
 public:
  // Starts tracking every region (see Tracker::Track for what memory can be
  // tracked). Errors from Tracker::Create/Track; on error nothing stays
  // tracked. The regions must stay mapped while the chain lives.
  static Result<std::unique_ptr<SnapshotChain>> Create(const std::vector<Region>& regions,
                                                       const SnapshotChainOptions& options = {});

  // Stops tracking (the tracker is destroyed). Images written stay.
  virtual ~SnapshotChain() = default;
  SnapshotChain(const SnapshotChain&) = delete;
  SnapshotChain& operator=(const SnapshotChain&) = delete;

  // Starts a new chain: re-arms the tracker (discarding what it reported so
  // far), then writes a full image of the regions to `path`. A write racing
  // the capture is reported again by the next Layer(). On error there is
  // no base: Layer() fails until a Base() succeeds.
  virtual Result<SnapshotStats> Base(const std::string& path) = 0;

  // Collects the pages written since the previous image and writes them as
  // a layer at `path` whose parent is the previous image. On error (Collect
  // or write), the collected pages are kept and included in the next
  // Layer(): nothing written is lost, and the chain's head is unchanged.
  // Errors: kFailedPrecondition without a base; otherwise as
  // SnapshotIncremental and Tracker::Collect.
  virtual Result<SnapshotStats> Layer(const std::string& path) = 0;

  // Path of the newest image ("" before the first Base()).
  virtual const std::string& head() const = 0;
  // Layers written on top of the current base.
  virtual int layers() const = 0;
  virtual const std::vector<Region>& regions() const = 0;
  // The chain's tracker (owned by the chain).
  virtual Tracker* tracker() const = 0;

 protected:
  SnapshotChain() = default;
};

// ---- eager restore -----------------------------------------------------------

enum class RestorePlacement {
  // New private anonymous mappings at addresses the kernel picks. Owned by
  // the RestoredMemory. After an error: every mapping this call made is
  // unmapped; nothing is left.
  kFresh,
  // New private anonymous mappings at each region's recorded address, with
  // MAP_FIXED_NOREPLACE: kAlreadyExists if anything is mapped there. Owned
  // by the RestoredMemory (Release() to keep them). After an error: every
  // mapping this call made is unmapped; the address space is as before.
  kOriginal,
  // The recorded address ranges must be mapped already (kFailedPrecondition
  // otherwise). Each region is built in a private staging mapping and then
  // moved over the existing mapping with mremap(MREMAP_FIXED), which
  // replaces it atomically: the result is private anonymous memory (a shared
  // or tracked mapping there is replaced, not written through). Not owned.
  // After an error before the moves, existing memory is untouched; if the
  // move of region k fails, regions before k were already replaced and the
  // error says so.
  kReplaceExisting,
  // Writes through the existing mappings at the recorded addresses (keeps
  // their kind: memfd, tracked, ...). Not owned. The whole chain is
  // verified (Image::Verify) before memory is touched, so corruption leaves
  // memory untouched; an I/O error after that point leaves the regions
  // partially restored, and the error says they must not be used.
  kOverwriteInPlace,
};

struct EagerRestoreOptions {
  RestorePlacement placement = RestorePlacement::kFresh;
  // Give new mappings the region's prot after filling them (prot 0 is taken
  // as "not recorded": the mapping stays PROT_READ|PROT_WRITE).
  bool apply_prot = true;
  int threads = 1;  // reader threads (>= 1)
};

struct RestoredRegion {
  Region info;           // as recorded in the image
  char* data = nullptr;  // where the region's bytes now are
  bool owned = false;    // unmapped by ~RestoredMemory unless released
};

struct EagerRestoreStats {
  uint64_t data_pages = 0;  // pages read from the chain
  uint64_t zero_pages = 0;  // pages recorded as zero or absent
  uint64_t bytes_read = 0;  // data_pages * page size
  uint64_t elapsed_ns = 0;  // wall time of the RestoreEager call
};

// The regions of a successful RestoreEager. Destruction unmaps the owned
// mappings (RestorePlacement says which are owned). Made only by
// RestoreEager.
class RestoredMemory {
 public:
  virtual ~RestoredMemory() = default;
  RestoredMemory(const RestoredMemory&) = delete;
  RestoredMemory& operator=(const RestoredMemory&) = delete;

  virtual const std::vector<RestoredRegion>& regions() const = 0;
  virtual const EagerRestoreStats& stats() const = 0;
  // Hands every mapping to the caller (who must munmap the owned ones);
  // regions() is empty afterwards and destruction unmaps nothing.
  virtual std::vector<RestoredRegion> Release() = 0;

 protected:
  RestoredMemory() = default;
};

// Restores the chain whose top layer is `path` (or an already opened
// image). Data pages are read with checksums verified (Image::Read); in
// fresh mappings (kFresh, kOriginal, kReplaceExisting) zero and absent
// pages are not touched, so they stay unpopulated. Errors: the image's
// (kNotFound, kCorruption naming layer/region/offset, kNotSupported for an
// unknown version), kResourceExhausted when memory cannot be mapped
// (for a region recorded with a huge page size: from the hugetlbfs pool of
// that size; the message names the nr_hugepages file), kFailedPrecondition
// when existing memory (kReplaceExisting, kOverwriteInPlace) does not have
// the region's page size, plus the placement-specific ones above. What
// memory holds after an error: see RestorePlacement.
Result<std::unique_ptr<RestoredMemory>> RestoreEager(const std::string& path,
                                                     const EagerRestoreOptions& options = {});
Result<std::unique_ptr<RestoredMemory>> RestoreEager(const Image& image,
                                                     const EagerRestoreOptions& options = {});

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_SNAPSHOT_H_
