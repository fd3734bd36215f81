// Page images: pagewise's on-disk format for memory, and its reader/writer.
//
// An image file holds regions (pagewise::Region: address, length, flat
// offset, page size, protection, kind, name), an index of page runs, and page data where all-zero
// pages take no space, identical pages are stored once (content hash), and
// data chunks may be compressed (zstd or lz4). Checksums cover the header,
// the index and every data chunk. An image may name a parent: it is then an
// incremental layer holding only pages written since the parent; pages it
// does not hold come from the parent chain (absent everywhere: zero).
// The format is specified in docs/image-format.md.
//
// Regions across a chain are matched by index: every layer of a chain lists
// the same regions (same address and length) in the same order.
//
// The flat view: each region's `offset` is its position in a flat
// memory file (Firecracker's guest-memory snapshot layout). ReadFlat() serves
// an image as if it were that flat file.
//
// Crash safety: ImageWriter writes to a temporary file beside the target and
// makes it appear under its final name only in Commit() (write, fsync,
// rename, fsync of the directory). A writer killed at any moment leaves
// earlier images intact and nothing that reads as a valid image.
//
// Thread safety: ImageWriter::AddPages/AddZeroPages may be called
// concurrently from several threads; AddRegion and Commit must not race
// them. Image (the reader) is immutable after Open: every const method is
// safe from any number of threads.
#ifndef PAGEWISE_IMAGE_H_
#define PAGEWISE_IMAGE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/region.h"
#include "pagewise/remote_options.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

enum class Compression : uint8_t { kNone = 0, kZstd = 1, kLz4 = 2 };
// "none", "zstd", "lz4".
std::string_view CompressionName(Compression c);
Result<Compression> ParseCompression(std::string_view name);

// Progress of a long operation: `done` out of `total` (bytes unless stated).
// Called from the thread running the operation.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// Image regions are pagewise::Region (pagewise/region.h): address when
// captured (0 if none), length, offset in the flat view (at most 2^62),
// page_size (a power of two, 512 .. 16 MiB), prot, kind and name.

struct ImageWriteOptions {
  Compression compression = Compression::kZstd;
  int level = 1;       // compressor level (zstd: 1..19; lz4: ignored)
  std::string parent;  // parent image path; empty: a full (base) image
  bool dedup = true;   // store identical pages once
  // Target uncompressed size of a data chunk (the unit of compression,
  // checksumming and reading): 4 KiB .. 16 MiB. Smaller chunks make random
  // single-page reads cheaper; larger ones compress better.
  uint32_t chunk_bytes = 64 * 1024;
  // Threads that test, hash, compress and write pages, the one calling
  // AddPages included: 0 = one per online CPU (at most 8), 1 = only the
  // calling thread. Helper threads start with the first AddPages and take
  // that thread's scheduling priority.
  int threads = 0;
};

struct ImageStats {
  uint64_t pages = 0;             // pages recorded in this layer
  uint64_t zero_pages = 0;        // all-zero pages (no data stored)
  uint64_t duplicate_pages = 0;   // pages whose content was already stored
  uint64_t stored_pages = 0;      // distinct non-zero pages stored
  uint64_t raw_bytes = 0;         // stored_pages * page_size
  uint64_t compressed_bytes = 0;  // data bytes on disk after compression
  uint64_t file_bytes = 0;        // whole file size
};

class ImageWriter {
 public:
  // Starts writing an image that will appear at `path` on Commit(). With
  // options.parent set, the parent is opened and checked now (its regions
  // become this layer's regions unless AddRegion is called). Errors: the
  // parent is missing/corrupt (kNotFound/kCorruption), the directory is not
  // writable (kPermissionDenied/kIoError).
  static Result<std::unique_ptr<ImageWriter>> Create(const std::string& path,
                                                     const ImageWriteOptions& options = {});

  // Abandons an uncommitted image: the temporary file is removed.
  virtual ~ImageWriter() = default;
  ImageWriter(const ImageWriter&) = delete;
  ImageWriter& operator=(const ImageWriter&) = delete;

  // Declares a region; returns its index. For a layer with a parent, the
  // regions must match the parent's (kInvalidArgument otherwise): the
  // first AddRegion call replaces the inherited list, then the i-th call
  // must match the parent's region i (address, length, page size), and
  // Commit requires all of them. AddRegion after pages were added to the
  // inherited regions is kFailedPrecondition. Bad page size or length:
  // kInvalidArgument (page sizes above 16 MiB: kNotSupported).
  virtual Result<uint32_t> AddRegion(const Region& region) = 0;

  // Records pages [offset, offset+len) of `region` (offset and len page
  // aligned, inside the region) with the bytes at `data`. A page recorded
  // twice keeps the later content. Zero pages are detected and stored as
  // zero. The bytes are copied before AddPages returns (then `data` may
  // change), in batches: a page that changes during the call is stored as
  // one consistent copy. Testing, hashing, compressing and writing happen
  // on the writer's helper threads (ImageWriteOptions::threads) after the
  // copy; AddPages waits only for a free staging buffer. Errors from the
  // file system (ENOSPC, EIO) are returned as is, by this call or - when
  // they happen on a helper after it returned - by a later call or
  // Commit(); the writer is then failed and Commit() refuses.
  virtual Status AddPages(uint32_t region, uint64_t offset, const void* data, size_t len) = 0;

  // Records pages as zero in this layer (overriding any parent content):
  // used for pages dropped with MADV_DONTNEED since the parent.
  virtual Status AddZeroPages(uint32_t region, uint64_t offset, size_t len) = 0;

  // Finishes the image: index, checksums, fsync, rename to the final path,
  // fsync of the directory. After an error nothing exists at `path`
  // (an earlier image there is left untouched), with one exception: if only
  // the final fsync of the directory fails, the complete new image is
  // already in place (readable and valid) but may not survive a power loss.
  // Commit may be called once; the writer is finished afterwards.
  virtual Status Commit() = 0;

  // Running totals while writing; exact (and equal to what readers see in
  // LayerInfo::stats) after a successful Commit. Any thread.
  virtual ImageStats stats() const = 0;

 protected:
  ImageWriter() = default;
};

// Where a page of an opened chain comes from.
enum class PageSourceKind : uint8_t {
  kAbsent = 0,  // in no layer: reads as zero
  kZero = 1,    // recorded as zero
  kData = 2,    // stored data
};

struct LayerInfo {
  std::string path;
  std::string parent;  // as recorded in the layer ("" for a base image)
  ImageStats stats;
  Compression compression = Compression::kNone;
  uint32_t version = 0;
};

struct ImageOpenOptions {
  // Verify every data chunk's checksum at Open (slow for big images).
  // Chunks are always verified when read, whatever this says.
  bool verify_data = false;
  // For images named by URL (s3://BUCKET/NAME, http(s)://...): endpoint,
  // keys, cache (pagewise/remote_options.h).
  RemoteOptions remote;
};

// A verification failure points here.
struct VerifyError {
  std::string layer;    // path of the first bad layer
  int64_t region = -1;  // region index, -1 if not region-specific
  uint64_t offset = 0;  // byte offset (in region, or in file when region == -1)
  std::string what;
};

class Image {
 public:
  // Opens `path` and its parent chain (parents resolved relative to the
  // child's directory when relative). `path` may also be a URL: an image
  // pushed to S3 (s3://BUCKET/NAME, see pagewise/remote.h) or an image file
  // served over http(s):// (read with range requests); their chunks are
  // fetched on demand through the host's chunk cache. Any other SCHEME://
  // is kInvalidArgument. Header and index checksums of every
  // layer are checked; a bad one is kCorruption naming layer and offset.
  // Unsupported versions are refused (kNotSupported naming both versions).
  // A parent that is not the image the child was written against (replaced
  // at its path) is kCorruption; a missing one kNotFound. Memory: each
  // layer's index (about 8 bytes a recorded data page, 24 a run) plus, per
  // reading thread, one decompressed chunk.
  static Result<std::unique_ptr<Image>> Open(const std::string& path,
                                             const ImageOpenOptions& options = {});

  virtual ~Image() = default;
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;

  virtual const std::vector<Region>& regions() const = 0;
  // Layers from top (the opened file) to base.
  virtual const std::vector<LayerInfo>& layers() const = 0;

  // Reads pages [offset, offset+len) of `region` into dst (page aligned),
  // resolving through the chain; absent pages read as zero. Each chunk read
  // is checksummed: kCorruption names layer, region and offset.
  virtual Status Read(uint32_t region, uint64_t offset, void* dst, size_t len) const = 0;

  // Per-page source of [offset, offset+len) of `region` (one entry a page),
  // without reading data: lets restore use UFFDIO_ZEROPAGE for zero pages.
  virtual Status Classify(uint32_t region, uint64_t offset, size_t len,
                          std::vector<PageSourceKind>* out) const = 0;

  // Classify as runs: maximal ranges of equal source kind covering
  // [offset, offset+len) of `region` in order (byte offsets and lengths).
  // Costs O(runs), not O(pages): use it for large regions.
  struct SourceRun {
    uint64_t offset = 0;
    uint64_t length = 0;
    PageSourceKind kind = PageSourceKind::kAbsent;
  };
  virtual Status ClassifyRuns(uint32_t region, uint64_t offset, uint64_t len,
                              std::vector<SourceRun>* out) const = 0;

  // Pages recorded in the TOP layer only (for diff/inspect): sorted runs of
  // [offset, offset+len) in region.
  virtual Status TopLayerRuns(uint32_t region,
                              std::vector<std::pair<uint64_t, uint64_t>>* runs) const = 0;

  // The flat view: bytes [offset, offset+len) of the flat memory file this
  // image represents (regions at their offset; gaps read as zero).
  virtual uint64_t flat_size() const = 0;
  virtual Status ReadFlat(uint64_t offset, void* dst, size_t len) const = 0;

  // Checks every byte of every layer (header, index, each data chunk,
  // decompression, hashes). OK, or kCorruption with *error (optional) set to
  // the first bad layer, region and offset.
  virtual Status Verify(VerifyError* error = nullptr) const = 0;
  // Verify, calling `progress` (may be empty) with data bytes checked so far.
  virtual Status VerifyWithProgress(VerifyError* error, const ProgressFn& progress) const = 0;

 protected:
  Image() = default;
};

// Opens the chain at `path` and verifies all of it (Image::Open's header and
// index checks for every layer, then Image::Verify). On failure *error
// (optional) names the first bad layer; region is -1 with a file offset for
// header/index damage or a missing/replaced parent, else region and offset
// of the first page using the damaged data. `progress` (may be empty) gets
// data bytes checked.
Status VerifyImage(const std::string& path, VerifyError* error = nullptr,
                   const ProgressFn& progress = nullptr);

// Writes the chain at `in` as one base image at `out` (no parent): same
// regions, each page's resolved content; pages recorded as zero anywhere in
// the chain stay recorded as zero, absent pages stay absent. options.parent
// must be empty. `progress` (may be empty) gets bytes of pages processed.
// Errors: those of Image::Open, Image::Read and ImageWriter.
Status FlattenImage(const std::string& in, const std::string& out,
                    const ImageWriteOptions& options = {}, const ProgressFn& progress = nullptr);

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_IMAGE_H_
