// `pagewise diff A B [--json] [--exit-code]`: the pages whose content
// differs between two images (each resolved through its chain; absent pages
// read as zero). Regions are matched by index; a region present in only one
// image, or with another length or page size, differs as a whole. Prints
// (region, offset, length) ranges and the number of differing pages. Exit
// status 0, or with --exit-code 1 when the images differ.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <vector>

#include "command.h"
#include "image_util.h"
#include "pagewise/image.h"

namespace pagewise::cli {
namespace {

struct Range {
  uint32_t region;
  uint64_t offset, length;
};

struct DiffResult {
  std::vector<Range> ranges;
  uint64_t pages = 0;
};

void AddRange(DiffResult* d, uint32_t region, uint64_t off, uint64_t len, uint64_t page_size) {
  d->pages += len / page_size;
  if (!d->ranges.empty() && d->ranges.back().region == region &&
      d->ranges.back().offset + d->ranges.back().length == off) {
    d->ranges.back().length += len;
  } else {
    d->ranges.push_back({region, off, len});
  }
}

// Compares [off, off+len) of region r page by page, reading in 4 MiB blocks.
Status CompareRange(const Image& a, const Image& b, uint32_t r, uint64_t off, uint64_t len,
                    DiffResult* d, ProgressLine* progress, uint64_t* done, uint64_t total) {
  const uint64_t ps = a.regions()[r].page_size;
  const uint64_t batch = std::max<uint64_t>(ps, (4 << 20) / ps * ps);
  std::vector<char> ba, bb;
  for (uint64_t pos = off; pos < off + len; pos += batch) {
    const uint64_t n = std::min(batch, off + len - pos);
    ba.resize(n);
    bb.resize(n);
    PW_RETURN_IF_ERROR(a.Read(r, pos, ba.data(), n));
    PW_RETURN_IF_ERROR(b.Read(r, pos, bb.data(), n));
    for (uint64_t i = 0; i < n / ps; ++i) {
      if (std::memcmp(ba.data() + i * ps, bb.data() + i * ps, ps) != 0) {
        AddRange(d, r, pos + i * ps, ps, ps);
      }
    }
    *done += n;
    progress->Update(*done, total);
  }
  return Status::Ok();
}

// Only ranges where either image has data need reading: zero and absent
// pages both read as zero.
Status DiffRegion(const Image& a, const Image& b, uint32_t r, DiffResult* d, ProgressLine* progress,
                  uint64_t* done, uint64_t total) {
  const uint64_t length = a.regions()[r].length;
  std::vector<Image::SourceRun> ra, rb;
  PW_RETURN_IF_ERROR(a.ClassifyRuns(r, 0, length, &ra));
  PW_RETURN_IF_ERROR(b.ClassifyRuns(r, 0, length, &rb));
  size_t i = 0, j = 0;
  uint64_t pos = 0;
  while (pos < length && i < ra.size() && j < rb.size()) {
    const uint64_t end_a = ra[i].offset + ra[i].length, end_b = rb[j].offset + rb[j].length;
    const uint64_t end = std::min(end_a, end_b);
    if (ra[i].kind == PageSourceKind::kData || rb[j].kind == PageSourceKind::kData) {
      PW_RETURN_IF_ERROR(CompareRange(a, b, r, pos, end - pos, d, progress, done, total));
    }
    pos = end;
    if (end_a == end) ++i;
    if (end_b == end) ++j;
  }
  return Status::Ok();
}

Status Diff(const std::string& pa, const std::string& pb, DiffResult* d) {
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> a, Image::Open(pa));
  PW_ASSIGN_OR_RETURN(std::unique_ptr<Image> b, Image::Open(pb));
  const auto& ra = a->regions();
  const auto& rb = b->regions();
  // Progress: bytes of recorded data in either image (an upper bound).
  uint64_t total = 0, done = 0;
  for (const LayerInfo& l : a->layers()) total += l.stats.raw_bytes;
  for (const LayerInfo& l : b->layers()) total += l.stats.raw_bytes;
  ProgressLine progress("diff");
  for (uint32_t r = 0; r < std::max(ra.size(), rb.size()); ++r) {
    if (r >= ra.size() || r >= rb.size() || ra[r].length != rb[r].length ||
        ra[r].page_size != rb[r].page_size) {
      const Region& g = r < ra.size() ? ra[r] : rb[r];
      const uint64_t len =
          std::max(r < ra.size() ? ra[r].length : 0, r < rb.size() ? rb[r].length : 0);
      AddRange(d, r, 0, len, g.page_size);
      continue;
    }
    PW_RETURN_IF_ERROR(DiffRegion(*a, *b, r, d, &progress, &done, total));
  }
  return Status::Ok();
}

CommandRegistration reg(
    "diff", "List the pages that differ between two images", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<std::string>();
      auto b = std::make_shared<std::string>();
      auto json = std::make_shared<bool>(false);
      auto exit_code = std::make_shared<bool>(false);
      app->add_option("A", *a, "First image")->required();
      app->add_option("B", *b, "Second image")->required();
      app->add_flag("--json", *json, "Print one JSON object");
      app->add_flag("--exit-code", *exit_code, "Exit with status 1 when the images differ");
      return [a, b, json, exit_code]() -> int {
        DiffResult d;
        Status s = Diff(*a, *b, &d);
        if (!s.ok()) return Fail("diff", s);
        if (*json) {
          nlohmann::json ranges = nlohmann::json::array();
          for (const Range& r : d.ranges) {
            ranges.push_back({{"region", r.region}, {"offset", r.offset}, {"length", r.length}});
          }
          std::cout << nlohmann::json{{"a", *a},
                                      {"b", *b},
                                      {"differing_pages", d.pages},
                                      {"ranges", ranges}}
                           .dump(2)
                    << std::endl;
        } else {
          for (const Range& r : d.ranges) {
            std::printf("region %u  offset %s  length %s\n", r.region, HexAddr(r.offset).c_str(),
                        HexAddr(r.length).c_str());
          }
          std::printf("%llu page(s) differ in %zu range(s)\n",
                      static_cast<unsigned long long>(d.pages), d.ranges.size());
        }
        return *exit_code && d.pages > 0 ? 1 : 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
