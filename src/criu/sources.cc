// CRIU page sources (see sources.h).
#include "criu/sources.h"

#include <cstdio>
#include <utility>

#include "pagewise/image.h"

namespace pagewise::criu {
namespace {

class DumpPageSource final : public PageSource {
 public:
  explicit DumpPageSource(std::shared_ptr<const CriuDump> d) : d_(std::move(d)) {}
  uint64_t size() const override { return d_->flat_size(); }
  Status Read(uint64_t offset, void* dst, size_t len) const override {
    return d_->Read(offset, dst, len);
  }
  const void* Direct(uint64_t offset, size_t len) const override { return d_->Direct(offset, len); }
  std::string Describe() const override {
    return "CRIU dump " + d_->dir() + " (" + std::to_string(d_->regions().size()) + " regions, " +
           std::to_string(d_->chain_length()) + " dump(s) in the chain)";
  }

 private:
  std::shared_ptr<const CriuDump> d_;
};

}  // namespace

std::shared_ptr<PageSource> DumpSource(std::shared_ptr<const CriuDump> dump) {
  return std::make_shared<DumpPageSource>(std::move(dump));
}

std::string RegionName(const DumpRegion& r) {
  return "criu pid=" + std::to_string(r.pid) + (r.lazy() ? " lazy" : " eager");
}

Result<std::vector<DumpRegion>> ImageLayout(const Image& image, const std::string& path) {
  std::vector<DumpRegion> out;
  for (const Region& ri : image.regions()) {
    DumpRegion r;
    char kind[16] = {0};
    unsigned pid = 0;
    if (std::sscanf(ri.name.c_str(), "criu pid=%u %15s", &pid, kind) != 2 ||
        (std::string(kind) != "lazy" && std::string(kind) != "eager")) {
      return Status::InvalidArgument(path + " was not imported from a CRIU dump (region '" +
                                     ri.name +
                                     "'); make it with `pagewise import --criu DIR IMAGE`");
    }
    r.pid = pid;
    r.address = ri.address;
    r.length = ri.length;
    r.flat_offset = ri.offset;
    r.flags = std::string(kind) == "lazy" ? kPeLazy : 0;
    r.prot = ri.prot;
    out.push_back(r);
  }
  return out;
}

Result<std::shared_ptr<PageSource>> CheckedImageSource(const std::string& image_path,
                                                       const CriuDump& layout) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> img, Image::Open(image_path));
  const auto& ir = img->regions();
  const auto& dr = layout.regions();
  const std::string what = image_path + " was not imported from " + layout.dir();
  if (ir.size() != dr.size()) {
    return Status::InvalidArgument(what + ": it has " + std::to_string(ir.size()) +
                                   " regions, the dump's layout " + std::to_string(dr.size()) +
                                   " (import it with `pagewise import --criu DIR IMAGE`)");
  }
  for (size_t i = 0; i < ir.size(); ++i) {
    if (ir[i].address != dr[i].address || ir[i].length != dr[i].length ||
        ir[i].offset != dr[i].flat_offset || ir[i].name != RegionName(dr[i])) {
      return Status::InvalidArgument(what + ": region " + std::to_string(i) + " (" + ir[i].name +
                                     ") differs from the dump's (" + RegionName(dr[i]) + ")");
    }
  }
  return ImageSource(std::shared_ptr<const Image>(std::move(img)));
}

}  // namespace pagewise::criu
