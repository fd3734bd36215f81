// ImportCriuDump: a CRIU dump's memory as a pagewise image (see criu.h).
#include <algorithm>
#include <vector>

#include "criu/dump.h"
#include "criu/sources.h"
#include "pagewise/criu.h"

namespace pagewise {
namespace {

constexpr uint64_t kBlock = 4 << 20;

// Writes one layer: every region declared, the pages of regions `take`
// accepts added. Returns the layer's stats.
Result<ImageStats> WriteLayer(const criu::CriuDump& d, const std::string& path,
                              ImageWriteOptions wo, bool (*take)(const criu::DumpRegion&),
                              const CriuImportOptions& o, uint64_t* done, uint64_t total) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> w, ImageWriter::Create(path, wo));
  for (const criu::DumpRegion& r : d.regions()) {
    Region ri;
    ri.address = r.address;
    ri.length = r.length;
    ri.page_size = PageSize();
    ri.prot = r.prot;
    ri.kind = RegionKind::kAnonymous;
    ri.name = criu::RegionName(r);
    ri.offset = r.flat_offset;
    PW_RETURN_IF_ERROR(w->AddRegion(ri).status());
  }
  std::vector<char> buf;
  for (size_t i = 0; i < d.regions().size(); ++i) {
    const criu::DumpRegion& r = d.regions()[i];
    if (!take(r)) continue;
    for (uint64_t off = 0; off < r.length; off += kBlock) {
      const uint64_t n = std::min(kBlock, r.length - off);
      buf.resize(n);
      PW_RETURN_IF_ERROR(d.Read(r.flat_offset + off, buf.data(), n));
      PW_RETURN_IF_ERROR(w->AddPages(static_cast<uint32_t>(i), off, buf.data(), n));
      *done += n;
      if (o.progress) o.progress(*done, total);
    }
  }
  PW_RETURN_IF_ERROR(w->Commit());
  return w->stats();
}

bool FromParents(const criu::DumpRegion& r) { return (r.flags & criu::kPeParent) != 0; }
bool FromThisDump(const criu::DumpRegion& r) { return (r.flags & criu::kPeParent) == 0; }
bool Everything(const criu::DumpRegion&) { return true; }

}  // namespace

Result<CriuImportReport> ImportCriuDump(const std::string& dump_dir, const std::string& image_path,
                                        const CriuImportOptions& o) {
  if (!o.write.parent.empty()) {
    return Status::InvalidArgument("import --criu: the parent comes from the dump's own chain");
  }
  PW_ASSIGN_OR_RETURN(std::shared_ptr<criu::CriuDump> d, criu::CriuDump::Open(dump_dir));
  CriuImportReport rep;
  rep.tasks = d->tasks().size();
  rep.regions = d->regions().size();
  rep.pages = d->flat_size() / PageSize();
  // The dump's page files, parents included (each dump's own tasks).
  std::string dir = dump_dir;
  for (size_t i = 0; i < d->chain_length(); ++i, dir += "/parent") {
    criu::CriuDump::OpenOptions oo;
    oo.data = false;
    Result<std::shared_ptr<criu::CriuDump>> p = criu::CriuDump::Open(dir, oo);
    if (!p.ok()) break;
    rep.dump_pages_bytes += (*p)->pages_file_bytes();
  }
  uint64_t done = 0;
  const uint64_t total = d->flat_size();
  const bool chain = o.layers && d->chain_length() > 1;
  if (chain) {
    const std::string base = image_path + ".base";
    PW_ASSIGN_OR_RETURN(ImageStats bs, WriteLayer(*d, base, o.write, FromParents, o, &done, total));
    ImageWriteOptions top = o.write;
    top.parent = base;
    PW_ASSIGN_OR_RETURN(ImageStats ts,
                        WriteLayer(*d, image_path, top, FromThisDump, o, &done, total));
    rep.image_bytes = bs.file_bytes + ts.file_bytes;
    rep.layers = {image_path, base};
  } else {
    PW_ASSIGN_OR_RETURN(ImageStats s,
                        WriteLayer(*d, image_path, o.write, Everything, o, &done, total));
    rep.image_bytes = s.file_bytes;
    rep.layers = {image_path};
  }
  VerifyError e;
  Status v = VerifyImage(image_path, &e);
  if (!v.ok()) return v.WithContext("verifying the imported image " + image_path);
  return rep;
}

}  // namespace pagewise
