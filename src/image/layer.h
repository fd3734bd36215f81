// Layer: one opened layer of a chain (an image file, or a remote layer's
// manifest): its checked header and decoded index, and checked reads of its
// data chunks through its ChunkSource (image/chunk_source.h).
//
// Thread safety: immutable after Open; ReadChunk is safe from any number of
// threads (the source is, and buffers are the caller's).
#ifndef PAGEWISE_IMAGE_LAYER_H_
#define PAGEWISE_IMAGE_LAYER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "image/chunk_source.h"
#include "image/format.h"
#include "pagewise/image.h"
#include "sys/env.h"

namespace pagewise::image {

class Layer {
 public:
  // Opens `path` read-only, reads and checks the header (checksum, version,
  // sizes against the real file size) and the index (checksum, structure).
  // kCorruption names the path and file offset; kNotSupported for other
  // format versions; kNotFound / kIoError from opening. Allocates at most
  // the file's size. On kCorruption/kNotSupported, *bad_at (if not null)
  // is the file offset of the offending field.
  static Result<std::unique_ptr<Layer>> Open(Env* env, const std::string& path,
                                             uint64_t* bad_at = nullptr);
  // A layer from its header and index bytes (as they are in an image file;
  // file_size is the size that file has or had) whose chunks come from
  // `source`: remote layers. `name` names it in messages and LayerInfo;
  // `parent_name` (may be empty) replaces the recorded parent path in
  // LayerInfo. Checks as Open; *bad_at is an offset in the file layout.
  static Result<std::unique_ptr<Layer>> FromParts(std::string name, const uint8_t* head,
                                                  size_t head_len, uint64_t file_size,
                                                  const uint8_t* index, size_t index_len,
                                                  std::unique_ptr<ChunkSource> source,
                                                  std::string parent_name, uint64_t* bad_at);
  ~Layer();
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  const Index& index() const { return index_; }
  LayerInfo Info() const;

  // Runs of region `r` are index().runs[RunsBegin(r), RunsEnd(r)).
  size_t RunsBegin(uint32_t r) const { return region_runs_[r]; }
  size_t RunsEnd(uint32_t r) const { return region_runs_[r + 1]; }

  // Reads chunk `id` into *raw (resized to its raw length), verifying the
  // stored checksum before decompressing and the raw checksum after.
  // `scratch` holds the stored bytes (reused between calls). kCorruption
  // names the layer, chunk and file offset; I/O errors pass through with
  // the same context. Precondition: id < index().chunks.size().
  Status ReadChunk(uint64_t id, std::vector<uint8_t>* raw, std::vector<uint8_t>* scratch,
                   ReadPriority priority = ReadPriority::kDemand) const;

  const ChunkSource& source() const { return *source_; }

  // The first (region, byte offset) whose page refers to chunk `id`;
  // false if no page does.
  bool FirstUserOfChunk(uint64_t id, uint32_t* region, uint64_t* offset) const;

 private:
  explicit Layer(std::string path) : path_(std::move(path)) {}
  // Checks the header and index bytes and decodes them into this layer.
  Status Decode(const uint8_t* head, size_t head_len, uint64_t file_size, const uint8_t* index,
                size_t index_len, uint64_t* bad_at);

  std::unique_ptr<ChunkSource> source_;
  std::string path_;
  std::string parent_name_;
  Header header_;
  Index index_;
  std::vector<size_t> region_runs_;
};

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_LAYER_H_
