// Chunk compression for image format v1: zstd (one frame per chunk) and LZ4
// (one raw block per chunk, no frame). Contexts are cached per thread.
//
// Thread safety: all functions are safe from any number of threads (each
// thread uses its own compression contexts).
#ifndef PAGEWISE_IMAGE_COMPRESSION_H_
#define PAGEWISE_IMAGE_COMPRESSION_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pagewise/image.h"
#include "pagewise/status.h"

namespace pagewise::image {

// Compresses src[0, len) with `c` at `level` into *out (resized to the
// compressed size). Returns false if compression did not make the data
// smaller (or failed); the caller then stores the chunk uncompressed.
// kNone always returns false.
bool CompressChunk(Compression c, int level, const void* src, size_t len,
                   std::vector<uint8_t>* out);

// Decompresses `stored_len` bytes of `src` compressed with `c` into exactly
// `raw_len` bytes at dst. Any error, or output of another size, is
// kCorruption with `what` as context. Never writes beyond dst[raw_len).
Status DecompressChunk(Compression c, const void* src, size_t stored_len, void* dst, size_t raw_len,
                       const std::string& what);

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_COMPRESSION_H_
