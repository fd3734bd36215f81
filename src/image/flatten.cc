// FlattenImage: merges a chain into one base image through the public API.
// The work follows the chain's runs, not the sizes it declares: absent
// runs cost nothing, a zero run is one call however long, and only stored
// data is read (a crafted image declaring exabytes of zero or absent pages
// flattens as fast as an empty one).
#include <algorithm>
#include <vector>

#include "image/image_env.h"
#include "pagewise/image.h"
#include "pagewise/output_file.h"

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
  // The output must not replace any layer of the chain it is made from.
  std::vector<std::string> layers;
  for (const LayerInfo& l : src->layers()) layers.push_back(l.path);
  PW_RETURN_IF_ERROR(CheckOutputPath(out, layers));
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w, CreateImageWriter(out, options, env));
  // Where every region's pages come from; progress counts recorded bytes.
  const size_t nregions = src->regions().size();
  std::vector<std::vector<Image::SourceRun>> all_runs(nregions);
  uint64_t total = 0, done = 0;
  for (uint32_t ri = 0; ri < nregions; ++ri) {
    PW_RETURN_IF_ERROR(src->ClassifyRuns(ri, 0, src->regions()[ri].length, &all_runs[ri]));
    for (const Image::SourceRun& run : all_runs[ri]) {
      if (run.kind == PageSourceKind::kData) total += run.length;
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
      if (run.kind == PageSourceKind::kAbsent) continue;
      if (run.kind == PageSourceKind::kZero) {
        PW_RETURN_IF_ERROR(w->AddZeroPages(ri, run.offset, run.length));
        continue;
      }
      for (uint64_t off = run.offset; off < run.offset + run.length; off += batch) {
        const uint64_t n = std::min(batch, run.offset + run.length - off);
        buf.resize(n);
        PW_RETURN_IF_ERROR(src->Read(ri, off, buf.data(), n));
        PW_RETURN_IF_ERROR(w->AddPages(ri, off, buf.data(), n));
        done += n;
        if (progress) progress(done, total);
      }
    }
  }
  return w->Commit();
}

}  // namespace pagewise
