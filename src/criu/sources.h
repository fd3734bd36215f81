// Page sources for CRIU restores: a dump's own files, a pagewise image
// imported from the dump (checked against the dump's layout), and (in
// remote_source.h) a TCP page server.
//
// Thread safety: sources are immutable after creation (PageSource).
#ifndef PAGEWISE_CRIU_SOURCES_H_
#define PAGEWISE_CRIU_SOURCES_H_

#include <memory>
#include <string>

#include "criu/dump.h"
#include "pagewise/image.h"
#include "pagewise/restore.h"
#include "pagewise/status.h"

namespace pagewise::criu {

// The flat view of a dump opened with data.
std::shared_ptr<PageSource> DumpSource(std::shared_ptr<const CriuDump> dump);

// Region names an import writes ("criu pid=P lazy" / "... eager").
std::string RegionName(const DumpRegion& r);

// The regions an imported image describes (from its region names), in
// the image's order; kInvalidArgument if it was not imported from a dump.
Result<std::vector<DumpRegion>> ImageLayout(const Image& image, const std::string& path);

// Opens `image_path` and checks that its regions are exactly `layout`'s
// (same count, addresses, lengths, flat offsets, names): an image
// imported from another dump is kInvalidArgument naming the first
// difference.
Result<std::shared_ptr<PageSource>> CheckedImageSource(const std::string& image_path,
                                                       const CriuDump& layout);

}  // namespace pagewise::criu

#endif  // PAGEWISE_CRIU_SOURCES_H_
