// Flat memory files and images: import (a flat file, e.g. Firecracker's
// guest-memory snapshot, becomes an image with one kFlat region at
// flat_offset 0) and export (an image's flat view becomes a flat file,
// byte-identical to the imported one).
//
// Both write their output as pagewise writes every file (output_file.h):
// through a temporary file renamed over the destination once complete, so
// a failure or an interrupt leaves an existing output as it was and no
// partial file; an output that is one of the inputs (the flat file, or
// any layer of the image's chain, by device and inode) is refused.
// Work is proportional to the data stored (export) or present (import):
// holes and zero runs cost nothing per page.
//
// Thread safety: plain functions; concurrent calls on distinct outputs are
// independent.
#ifndef PAGEWISE_FLAT_FILE_H_
#define PAGEWISE_FLAT_FILE_H_

#include <cstdint>
#include <string>

#include "pagewise/export.h"
#include "pagewise/image.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

struct ImportOptions {
  uint32_t page_size = 4096;  // a power of two, 512 .. 16 MiB; the file's size a multiple
  ImageWriteOptions write;    // compression, level, chunk size (parent must be empty)
};

// Reads the flat file `raw` (a regular file) in 4 MiB blocks, holes
// (SEEK_HOLE) recorded as zero pages without reading them, and commits an
// image at `image`. Errors: kInvalidArgument for a bad page size, a size
// that is not a multiple of it, a non-regular input or an output that is
// the input; open/read errors naming the file; the writer's errors.
// On success *stats (optional) holds the image's statistics.
Status ImportFlatFile(const std::string& raw, const std::string& image,
                      const ImportOptions& options = {}, ImageStats* stats = nullptr,
                      const ProgressFn& progress = nullptr);

struct ExportResult {
  uint64_t bytes = 0;       // size of the flat file (the image's flat size)
  uint64_t data_bytes = 0;  // bytes written (the rest are holes)
};

// Writes the flat view of the chain at `image` (Image::ReadFlat) to `raw`:
// only pages holding data are read and written; zero and absent pages and
// all-zero 4 KiB blocks stay holes, then the file is extended to the flat
// size. Errors: Image::Open's, no flat view (kFailedPrecondition), an
// output that is a layer of the chain (kInvalidArgument), I/O errors.
// `progress` gets data bytes done out of data bytes to do.
Status ExportFlatFile(const std::string& image, const std::string& raw,
                      ExportResult* result = nullptr, const ProgressFn& progress = nullptr);

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_FLAT_FILE_H_
