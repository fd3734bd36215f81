// FlattenImage: merges a chain into one base image through the public API.
#include <algorithm>
#include <vector>

#include "image/image_env.h"
#include "pagewise/image.h"

namespace pagewise {

Status FlattenImage(const std::string& in, const std::string& out, const ImageWriteOptions& options,
                    const ProgressFn& progress) {
  return FlattenImage(in, out, options, progress, Env::Default());
}

Status FlattenImage(const std::string& in, const std::string& out, const ImageWriteOptions& options,
                    const ProgressFn& progress, Env* env) {
  if (!options.parent.empty()) {
    return Status::InvalidArgument(
        "FlattenImage writes a base image: options.parent must be empty");
  }
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> src, OpenImage(in, ImageOpenOptions{}, env));
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w, CreateImageWriter(out, options, env));
  // Where every region's pages come from; progress counts recorded bytes.
  const size_t nregions = src->regions().size();
  std::vector<std::vector<Image::SourceRun>> all_runs(nregions);
  uint64_t total = 0, done = 0;
  for (uint32_t ri = 0; ri < nregions; ++ri) {
    PW_RETURN_IF_ERROR(src->ClassifyRuns(ri, 0, src->regions()[ri].length, &all_runs[ri]));
    for (const Image::SourceRun& run : all_runs[ri]) {
      if (run.kind != PageSourceKind::kAbsent) total += run.length;
    }
  }
  for (const Region& r : src->regions()) {
    Result<uint32_t> added = w->AddRegion(r);
    if (!added.ok()) return added.status();
  }
  std::vector<uint8_t> buf;
  constexpr uint64_t kBatch = 8 << 20;
  for (uint32_t ri = 0; ri < nregions; ++ri) {
    const Region& r = src->regions()[ri];
    const uint64_t batch = std::max<uint64_t>(r.page_size, kBatch / r.page_size * r.page_size);
    for (const Image::SourceRun& run : all_runs[ri]) {
      for (uint64_t off = run.offset; off < run.offset + run.length; off += batch) {
        const uint64_t n = std::min(batch, run.offset + run.length - off);
        if (run.kind == PageSourceKind::kZero) {
          PW_RETURN_IF_ERROR(w->AddZeroPages(ri, off, n));
        } else if (run.kind == PageSourceKind::kData) {
          buf.resize(n);
          PW_RETURN_IF_ERROR(src->Read(ri, off, buf.data(), n));
          PW_RETURN_IF_ERROR(w->AddPages(ri, off, buf.data(), n));
        }
        if (run.kind != PageSourceKind::kAbsent) done += n;
        if (progress) progress(done, total);
      }
    }
  }
  return w->Commit();
}

}  // namespace pagewise
