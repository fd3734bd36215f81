// ChainImage: the Image implementation. Opens a layer and its parents
// (top first), checks that they belong together (parent identity, regions),
// and resolves, per region, which layer serves each page: a sorted list of
// segments built once at Open by overlaying each layer's runs on those of
// the layers below it.
//
// Reads decompress whole chunks into the image's ChunkCache, shared by
// every thread reading the image, so that each chunk is decompressed once
// however many readers (threads, restores, page-server clients) need it.
//
// Thread safety: immutable after Open; all const methods are safe from any
// number of threads.
#ifndef PAGEWISE_IMAGE_CHAIN_H_
#define PAGEWISE_IMAGE_CHAIN_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "image/chunk_cache.h"
#include "image/format.h"
#include "image/layer.h"
#include "pagewise/image.h"

namespace pagewise::image {

// Maximum number of layers in a chain (a longer chain is refused: it is far
// beyond any sane use and bounds the work a hostile file can cause).
inline constexpr size_t kMaxChainDepth = 4096;

// Resolves a parent path recorded in the layer at `child_path`: absolute
// paths as is, relative ones against the child's directory.
std::string ResolveParentPath(const std::string& child_path, const std::string& recorded);

// Finds the layers of a chain: local files (paths, parents resolved
// relative to the child), or remote layers (src/remote).
class LayerResolver {
 public:
  virtual ~LayerResolver() = default;
  // Opens the layer called `name` (the top, or what ParentName returned).
  // On kCorruption/kNotSupported *bad_at is the offset of the bad field.
  virtual Result<std::unique_ptr<Layer>> OpenLayer(const std::string& name, uint64_t* bad_at) = 0;
  // The name under which `child`'s parent is opened. Precondition: the
  // child has a parent.
  virtual std::string ParentName(const Layer& child) = 0;
};

class ChainImage : public Image {
 public:
  // Opens the chain at `path`: a local path, or a URL (s3://, http(s)://,
  // opened by src/remote with `remote`). On failure, *where (if not null)
  // names the layer that failed and the file offset of the bad field
  // (region -1).
  static Result<std::unique_ptr<ChainImage>> OpenChain(const std::string& path, Env* env,
                                                       VerifyError* where = nullptr,
                                                       const RemoteOptions& remote = {});
  // Opens the chain whose top layer is `name`, its layers found by
  // `resolver`. Checks as OpenChain (identity, regions, loops, depth).
  static Result<std::unique_ptr<ChainImage>> OpenChainWith(LayerResolver* resolver,
                                                           const std::string& name,
                                                           VerifyError* where = nullptr);

  // Read / ReadFlat on behalf of `priority` (remote layers schedule their
  // fetches by it; a read spanning several chunks fetches them in parallel).
  Status ReadWithPriority(uint32_t region, uint64_t offset, void* dst, size_t len,
                          ReadPriority priority) const;
  Status ReadFlatWithPriority(uint64_t offset, void* dst, size_t len, ReadPriority priority) const;
  // Starts fetching what the pages at these flat offsets need (remote
  // layers; nothing for local files), in this order.
  void WillNeedFlat(const std::vector<uint64_t>& offsets, ReadPriority priority) const;
  // True if any layer is remote.
  bool remote() const { return remote_; }
  // The opened layers, top first.
  const std::vector<std::unique_ptr<Layer>>& layer_list() const { return layers_; }

  const std::vector<Region>& regions() const override { return regions_; }
  const std::vector<LayerInfo>& layers() const override { return infos_; }
  Status Read(uint32_t region, uint64_t offset, void* dst, size_t len) const override;
  Status Classify(uint32_t region, uint64_t offset, size_t len,
                  std::vector<PageSourceKind>* out) const override;
  Status ClassifyRuns(uint32_t region, uint64_t offset, uint64_t len,
                      std::vector<SourceRun>* out) const override;
  Status TopLayerRuns(uint32_t region,
                      std::vector<std::pair<uint64_t, uint64_t>>* runs) const override;
  uint64_t flat_size() const override { return flat_size_; }
  Status ReadFlat(uint64_t offset, void* dst, size_t len) const override;
  Status Verify(VerifyError* error) const override;
  Status VerifyWithProgress(VerifyError* error, const ProgressFn& progress) const override;

  const Uuid& top_uuid() const { return layers_.front()->header().uuid; }

 private:
  // Pages [first, first+count) come from run `run` of layer `layer`; page p
  // is entry (p - first + skip) of that run.
  struct Segment {
    uint64_t first = 0;
    uint64_t count = 0;
    uint32_t layer = 0;
    uint64_t run = 0;
    uint64_t skip = 0;
  };

  ChainImage() = default;
  void Resolve();
  Status CheckRange(uint32_t region, uint64_t offset, uint64_t len) const;
  // Index of the first segment of region `r` that ends after page `p`.
  size_t FindSegment(uint32_t r, uint64_t p) const;
  // The decompressed chunk `chunk` of layer `layer`, via the shared cache;
  // `priority` orders a remote layer's fetch.
  Result<ChunkCache::Data> Chunk(uint32_t layer, uint64_t chunk,
                                 ReadPriority priority = ReadPriority::kDemand) const;
  // Remote layers: hints the chunks that pages [p, pend) of `region` use,
  // plus read-ahead when reads of the region are sequential.
  void HintRange(uint32_t region, uint64_t p, uint64_t pend, ReadPriority priority) const;
  void HintPages(uint32_t region, uint64_t p, uint64_t pend, ReadPriority priority,
                 bool skip_first = false) const;

  std::unique_ptr<ChunkCache> cache_ = std::make_unique<ChunkCache>();
  std::vector<std::unique_ptr<Layer>> layers_;  // top first
  std::vector<LayerInfo> infos_;
  std::vector<Region> regions_;
  std::vector<std::vector<Segment>> resolved_;  // per region
  std::vector<uint32_t> flat_order_;            // regions by flat_offset
  bool flat_ok_ = true;
  uint64_t flat_size_ = 0;
  bool remote_ = false;
  // Per region: the page where the last read ended (read-ahead detection).
  std::unique_ptr<std::atomic<uint64_t>[]> last_end_;
  std::unique_ptr<std::atomic<uint32_t>[]> seq_reads_;  // sequential reads in a row
  // Per region and stream kind (2r: demand, 2r+1: background fill): the
  // page up to which a read-ahead hint was given.
  std::unique_ptr<std::atomic<uint64_t>[]> ahead_end_;
};

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_CHAIN_H_
