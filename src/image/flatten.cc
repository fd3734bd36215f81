// FlattenImage: merges a chain into one base image through the public API.
#include <algorithm>
#include <vector>

#include "pagewise/image.h"

namespace pagewise {

Status FlattenImage(const std::string& in, const std::string& out,
                    const ImageWriteOptions& options, const ProgressFn& progress) {
  if (!options.parent.empty()) {
    return Status::InvalidArgument("FlattenImage writes a base image: options.parent must be empty");
  }
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> src, Image::Open(in, {options.env, false}));
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w, ImageWriter::Create(out, options));
  uint64_t total = 0, done = 0;
  for (const RegionInfo& r : src->regions()) total += r.length;
  for (const RegionInfo& r : src->regions()) {
    Result<uint32_t> added = w->AddRegion(r);
    if (!added.ok()) return added.status();
  }
  std::vector<PageSourceKind> kinds;
  std::vector<uint8_t> buf;
  constexpr uint64_t kBatch = 8 << 20;
  for (uint32_t ri = 0; ri < src->regions().size(); ++ri) {
    const RegionInfo& r = src->regions()[ri];
    const uint64_t ps = r.page_size;
    const uint64_t batch = std::max<uint64_t>(ps, kBatch / ps * ps);
    for (uint64_t off = 0; off < r.length; off += batch) {
      const uint64_t len = std::min(batch, r.length - off);
      PW_RETURN_IF_ERROR(src->Classify(ri, off, len, &kinds));
      for (size_t i = 0; i < kinds.size();) {
        size_t j = i + 1;
        while (j < kinds.size() && kinds[j] == kinds[i]) ++j;
        const uint64_t o = off + i * ps, n = (j - i) * ps;
        if (kinds[i] == PageSourceKind::kZero) {
          PW_RETURN_IF_ERROR(w->AddZeroPages(ri, o, n));
        } else if (kinds[i] == PageSourceKind::kData) {
          buf.resize(n);
          PW_RETURN_IF_ERROR(src->Read(ri, o, buf.data(), n));
          PW_RETURN_IF_ERROR(w->AddPages(ri, o, buf.data(), n));
        }
        i = j;
      }
      done += len;
      if (progress) progress(done, total);
    }
  }
  return w->Commit();
}

}  // namespace pagewise
