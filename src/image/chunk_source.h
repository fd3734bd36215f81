// ChunkSource: where a layer's stored chunk bytes come from - the image
// reader's one seam between decoding and storage. A local image file reads
// a chunk with pread at its file offset; a remote image (src/remote) fetches
// the chunk's object through the host's chunk cache. Everything above it
// (checksums, decompression, the decompressed-chunk cache, chain
// resolution) is the same reader for both.
//
// Thread safety: implementations are immutable after creation; every method
// is safe from any number of threads.
#ifndef PAGEWISE_IMAGE_CHUNK_SOURCE_H_
#define PAGEWISE_IMAGE_CHUNK_SOURCE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "image/format.h"
#include "pagewise/restore.h"
#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::image {

class ChunkSource {
 public:
  virtual ~ChunkSource() = default;

  // Copies the c.stored_length stored bytes of chunk `id` (entry `c` of the
  // layer's index) into dst. A remote source verifies them against their
  // content hash first; the caller checks the index checksums either way.
  // Errors name the chunk and why (I/O, missing object, hash mismatch,
  // timeout); `what` ("image PATH: chunk N at file offset X") prefixes them.
  virtual Status ReadStored(uint64_t id, const ChunkEntry& c, uint8_t* dst, ReadPriority priority,
                            const std::string& what) const = 0;

  // A hint: chunks ids[0..n) will be read soon, in this order, at
  // `priority`. A remote source starts fetching them in parallel; a local
  // file ignores it.
  virtual void WillRead(const uint64_t* ids, size_t n, ReadPriority priority) const {
    (void)ids;
    (void)n;
    (void)priority;
  }

  // True if reads may cross a network (hints are worth computing).
  virtual bool remote() const { return false; }
};

// Chunks of a local image file: pread at the chunk's file offset. Owns `fd`.
std::unique_ptr<ChunkSource> FileChunkSource(Env* env, int fd);

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_CHUNK_SOURCE_H_
