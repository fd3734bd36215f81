// `pagewise inspect IMAGE [--json]`: layers (path, parent, version,
// compression, page counts, zero / duplicate / stored pages, raw and
// compressed sizes) and regions (address, length, page size, protection,
// kind, name, flat offset) with how the chain serves their pages.
#include <cstdio>
#include <iostream>
#include <memory>

#include "command.h"
#include "image_util.h"
#include "pagewise/image.h"

namespace pagewise::cli {
namespace {

struct RegionCounts {
  uint64_t data = 0, zero = 0, absent = 0, top = 0;
};

Status CountRegion(const Image& img, uint32_t r, RegionCounts* c) {
  const Region& reg = img.regions()[r];
  std::vector<Image::SourceRun> runs;
  PW_RETURN_IF_ERROR(img.ClassifyRuns(r, 0, reg.length, &runs));
  for (const Image::SourceRun& run : runs) {
    const uint64_t pages = run.length / reg.page_size;
    if (run.kind == PageSourceKind::kData) {
      c->data += pages;
    } else if (run.kind == PageSourceKind::kZero) {
      c->zero += pages;
    } else {
      c->absent += pages;
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> top;
  PW_RETURN_IF_ERROR(img.TopLayerRuns(r, &top));
  for (auto [off, len] : top) c->top += len / reg.page_size;
  return Status::Ok();
}

CommandRegistration reg(
    "inspect", "Show an image's layers, regions and page statistics", [](CLI::App* app) -> RunFn {
      auto path = std::make_shared<std::string>();
      auto json = std::make_shared<bool>(false);
      app->add_option("IMAGE", *path, "Image (top layer of a chain)")->required();
      app->add_flag("--json", *json, "Print one JSON object");
      return [path, json]() -> int {
        Result<std::unique_ptr<Image>> opened = Image::Open(*path);
        if (!opened.ok()) return Fail("inspect", opened.status());
        const Image& img = **opened;
        std::vector<RegionCounts> counts(img.regions().size());
        for (uint32_t r = 0; r < counts.size(); ++r) {
          Status s = CountRegion(img, r, &counts[r]);
          if (!s.ok()) return Fail("inspect", s);
        }
        if (*json) {
          nlohmann::json layers = nlohmann::json::array(), regions = nlohmann::json::array();
          for (const LayerInfo& l : img.layers()) {
            layers.push_back({{"path", l.path},
                              {"parent", l.parent},
                              {"version", l.version},
                              {"compression", CompressionName(l.compression)},
                              {"stats", StatsJson(l.stats)}});
          }
          for (uint32_t r = 0; r < counts.size(); ++r) {
            const Region& g = img.regions()[r];
            regions.push_back({{"index", r},
                               {"name", g.name},
                               {"address", g.address},
                               {"length", g.length},
                               {"page_size", g.page_size},
                               {"prot", g.prot},
                               {"kind", RegionKindName(g.kind)},
                               {"flat_offset", g.offset},
                               {"data_pages", counts[r].data},
                               {"zero_pages", counts[r].zero},
                               {"absent_pages", counts[r].absent},
                               {"top_layer_pages", counts[r].top}});
          }
          std::cout << nlohmann::json{{"image", *path},
                                      {"flat_size", img.flat_size()},
                                      {"layers", layers},
                                      {"regions", regions}}
                           .dump(2)
                    << std::endl;
          return 0;
        }
        std::printf("image %s: %zu layer(s), %zu region(s), flat size %s\n", path->c_str(),
                    img.layers().size(), img.regions().size(), HumanBytes(img.flat_size()).c_str());
        std::printf("\nlayers (top first):\n");
        for (const LayerInfo& l : img.layers()) {
          const ImageStats& s = l.stats;
          std::printf("  %s  (v%u, %s%s%s)\n", l.path.c_str(), l.version,
                      std::string(CompressionName(l.compression)).c_str(),
                      l.parent.empty() ? "" : ", parent ", l.parent.c_str());
          std::printf("    pages %llu: zero %llu, duplicate %llu, stored %llu\n",
                      static_cast<unsigned long long>(s.pages),
                      static_cast<unsigned long long>(s.zero_pages),
                      static_cast<unsigned long long>(s.duplicate_pages),
                      static_cast<unsigned long long>(s.stored_pages));
          std::printf("    data %s, compressed %s, file %s\n", HumanBytes(s.raw_bytes).c_str(),
                      HumanBytes(s.compressed_bytes).c_str(), HumanBytes(s.file_bytes).c_str());
        }
        std::printf("\n%-4s %-18s %-12s %-6s %-4s %-9s %-12s %-10s %-10s %-10s %s\n", "#",
                    "address", "length", "page", "prot", "kind", "flat_offset", "data", "zero",
                    "absent", "name");
        for (uint32_t r = 0; r < counts.size(); ++r) {
          const Region& g = img.regions()[r];
          std::printf("%-4u %-18s %-12s %-6llu %-4u %-9s %-12s %-10llu %-10llu %-10llu %s\n", r,
                      HexAddr(g.address).c_str(), HumanBytes(g.length).c_str(),
                      static_cast<unsigned long long>(g.page_size), g.prot,
                      std::string(RegionKindName(g.kind)).c_str(), HexAddr(g.offset).c_str(),
                      static_cast<unsigned long long>(counts[r].data),
                      static_cast<unsigned long long>(counts[r].zero),
                      static_cast<unsigned long long>(counts[r].absent), g.name.c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
