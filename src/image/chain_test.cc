// Incremental layers: chains of >= 10 layers, each holding only the pages
// written since its parent, AddZeroPages overriding parent data, parent
// identity checks, relative parent paths.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <vector>

#include "pagewise/image.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::FillPage;
using testing::TempDir;

constexpr uint32_t kPs = 4096;
constexpr size_t kPages = 192;

Region Reg(uint64_t addr, size_t pages) {
  Region r;
  r.address = addr;
  r.length = pages * kPs;
  r.page_size = kPs;
  r.name = "r";
  return r;
}

// The expected state of a two-region memory: content and per-page source.
struct Model {
  std::vector<char> mem[2];
  std::vector<PageSourceKind> kind[2];
  Model() {
    for (int r = 0; r < 2; ++r) {
      mem[r].assign(kPages * kPs, 0);
      kind[r].assign(kPages, PageSourceKind::kAbsent);
    }
  }
};

void ExpectImageEquals(const std::string& path, const Model& m) {
  auto img = Image::Open(path);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  for (uint32_t r = 0; r < 2; ++r) {
    std::vector<char> back(kPages * kPs, 1);
    ASSERT_TRUE((*img)->Read(r, 0, back.data(), back.size()).ok());
    for (size_t p = 0; p < kPages; ++p) {
      ASSERT_EQ(0, std::memcmp(back.data() + p * kPs, m.mem[r].data() + p * kPs, kPs))
          << path << " region " << r << " page " << p;
    }
    std::vector<PageSourceKind> kinds;
    ASSERT_TRUE((*img)->Classify(r, 0, kPages * kPs, &kinds).ok());
    EXPECT_EQ(kinds, m.kind[r]) << path << " region " << r;
    // ClassifyRuns describes the same, as maximal runs, also for sub-ranges.
    for (uint64_t from : {uint64_t{0}, uint64_t{13}}) {
      std::vector<Image::SourceRun> runs;
      ASSERT_TRUE((*img)->ClassifyRuns(r, from * kPs, (kPages - from) * kPs, &runs).ok());
      std::vector<PageSourceKind> expanded;
      uint64_t next = from * kPs;
      for (size_t i = 0; i < runs.size(); ++i) {
        EXPECT_EQ(runs[i].offset, next);
        if (i > 0) {
          EXPECT_NE(runs[i].kind, runs[i - 1].kind) << "runs must be maximal";
        }
        expanded.insert(expanded.end(), runs[i].length / kPs, runs[i].kind);
        next += runs[i].length;
      }
      EXPECT_EQ(expanded, std::vector<PageSourceKind>(m.kind[r].begin() + from, m.kind[r].end()));
    }
    // Reads of odd sub-ranges resolve the same way.
    ASSERT_TRUE((*img)->Read(r, 37 * kPs, back.data(), 41 * kPs).ok());
    EXPECT_EQ(0, std::memcmp(back.data(), m.mem[r].data() + 37 * kPs, 41 * kPs));
  }
  EXPECT_TRUE((*img)->Verify().ok());
}

TEST(ImageChain, TwelveIncrementalLayersReadBackEveryVersion) {
  TempDir dir;
  std::mt19937_64 rng(42);
  Model m;
  std::vector<Model> versions;
  std::vector<std::string> paths;
  for (int layer = 0; layer < 12; ++layer) {
    const std::string path = dir.File("l" + std::to_string(layer) + ".img");
    ImageWriteOptions opt;
    opt.compression = layer % 3 == 0 ? Compression::kZstd
                                     : (layer % 3 == 1 ? Compression::kLz4 : Compression::kNone);
    opt.chunk_bytes = 16384;
    if (layer > 0) opt.parent = paths.back();
    auto w = ImageWriter::Create(path, opt);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    if (layer == 0 || layer % 4 == 1) {
      // Explicit regions (must match the parent's); other layers inherit them.
      ASSERT_TRUE((*w)->AddRegion(Reg(0x100000, kPages)).ok());
      ASSERT_TRUE((*w)->AddRegion(Reg(0x800000, kPages)).ok());
    }
    std::map<std::pair<int, size_t>, bool> touched;  // pages written in this layer
    const size_t writes = layer == 0 ? kPages : 10 + rng() % 30;
    for (size_t k = 0; k < writes; ++k) {
      const int r = static_cast<int>(rng() % 2);
      const size_t p = layer == 0 ? k : rng() % kPages;
      const size_t n = std::min<size_t>(1 + rng() % 4, kPages - p);
      const int what = static_cast<int>(rng() % 10);
      char* at = m.mem[r].data() + p * kPs;
      if (what < 2) {
        std::memset(at, 0, n * kPs);
        ASSERT_TRUE((*w)->AddZeroPages(r, p * kPs, n * kPs).ok());
      } else {
        for (size_t i = 0; i < n; ++i) {
          if (what == 2) {
            std::memset(at + i * kPs, 0, kPs);  // zero content written: detected
          } else {
            FillPage(at + i * kPs, layer * 1000 + what % 4, p + i);
          }
        }
        ASSERT_TRUE((*w)->AddPages(r, p * kPs, at, n * kPs).ok());
      }
      for (size_t i = 0; i < n; ++i) {
        const bool zero = what <= 2;
        m.kind[r][p + i] = zero ? PageSourceKind::kZero : PageSourceKind::kData;
        touched[{r, p + i}] = true;
      }
    }
    ASSERT_TRUE((*w)->Commit().ok());
    EXPECT_EQ((*w)->stats().pages, touched.size()) << "a layer holds only its own pages";
    versions.push_back(m);
    paths.push_back(path);

    auto img = Image::Open(path);
    ASSERT_TRUE(img.ok()) << img.status().ToString();
    ASSERT_EQ((*img)->layers().size(), static_cast<size_t>(layer + 1));
    EXPECT_EQ((*img)->layers()[0].stats.pages, touched.size());
    for (uint32_t r = 0; r < 2; ++r) {
      std::vector<std::pair<uint64_t, uint64_t>> runs;
      ASSERT_TRUE((*img)->TopLayerRuns(r, &runs).ok());
      size_t covered = 0;
      for (auto [off, len] : runs) {
        for (uint64_t q = off / kPs; q < (off + len) / kPs; ++q) {
          EXPECT_TRUE(touched.count({static_cast<int>(r), q}))
              << "layer " << layer << " page " << q;
          ++covered;
        }
      }
      size_t expect = 0;
      for (auto& [key, unused] : touched) expect += key.first == static_cast<int>(r);
      EXPECT_EQ(covered, expect);
    }
  }
  for (size_t i = 0; i < paths.size(); ++i) ExpectImageEquals(paths[i], versions[i]);

  // Flattening the whole chain gives one layer with identical content.
  const std::string flat = dir.File("flat.img");
  ASSERT_TRUE(FlattenImage(paths.back(), flat).ok());
  auto f = Image::Open(flat);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->layers().size(), 1u);
  EXPECT_TRUE((*f)->layers()[0].parent.empty());
  ExpectImageEquals(flat, versions.back());
}

// Writes a one-region base image at `path` holding `pages` of seed `seed`.
void WriteBase(const std::string& path, uint64_t seed, const std::string& parent = "") {
  std::vector<char> data(8 * kPs);
  for (size_t i = 0; i < 8; ++i) FillPage(data.data() + i * kPs, seed, i);
  ImageWriteOptions opt;
  opt.parent = parent;
  auto w = ImageWriter::Create(path, opt);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  if (parent.empty()) {
    ASSERT_TRUE((*w)->AddRegion(Reg(0x1000, 8)).ok());
  }
  ASSERT_TRUE((*w)->AddPages(0, 0, data.data(), parent.empty() ? data.size() : kPs).ok());
  ASSERT_TRUE((*w)->Commit().ok());
}

TEST(ImageChain, ReplacedParentIsDetected) {
  TempDir dir;
  WriteBase(dir.File("base.img"), 1);
  WriteBase(dir.File("top.img"), 2, dir.File("base.img"));
  ASSERT_TRUE(Image::Open(dir.File("top.img")).ok());
  WriteBase(dir.File("base.img"), 1);  // same content, new identity
  auto img = Image::Open(dir.File("top.img"));
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().code(), Code::kCorruption);
  EXPECT_NE(img.status().message().find("parent was replaced"), std::string::npos)
      << img.status().ToString();
  EXPECT_NE(img.status().message().find("top.img"), std::string::npos);
}

TEST(ImageChain, MissingParentIsNotFoundNamingBoth) {
  TempDir dir;
  WriteBase(dir.File("base.img"), 1);
  WriteBase(dir.File("top.img"), 2, dir.File("base.img"));
  ASSERT_EQ(0, unlink(dir.File("base.img").c_str()));
  auto img = Image::Open(dir.File("top.img"));
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().code(), Code::kNotFound) << img.status().ToString();
  EXPECT_NE(img.status().message().find("base.img"), std::string::npos);
  EXPECT_NE(img.status().message().find("top.img"), std::string::npos);
}

TEST(ImageChain, RelativeParentSurvivesMovingTheDirectory) {
  TempDir dir;
  namespace fs = std::filesystem;
  fs::create_directories(dir.File("a/sub"));
  const std::string base_rel =
      fs::relative(dir.File("a/sub/base.img"), fs::current_path()).string();
  WriteBase(dir.File("a/sub/base.img"), 1);
  WriteBase(dir.File("a/top.img"), 2, base_rel);
  {
    auto img = Image::Open(dir.File("a/top.img"));
    ASSERT_TRUE(img.ok()) << img.status().ToString();
    EXPECT_EQ((*img)->layers()[0].parent, "sub/base.img");
  }
  fs::rename(dir.File("a"), dir.File("moved"));
  auto img = Image::Open(dir.File("moved/top.img"));
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  std::vector<char> page(kPs);
  ASSERT_TRUE((*img)->Read(0, 3 * kPs, page.data(), kPs).ok());
  EXPECT_TRUE(testing::PageMatches(page.data(), 1, 3));
  ASSERT_TRUE((*img)->Read(0, 0, page.data(), kPs).ok());
  EXPECT_TRUE(testing::PageMatches(page.data(), 2, 0));
}

TEST(ImageChain, LayerRegionsMustMatchParent) {
  TempDir dir;
  WriteBase(dir.File("base.img"), 1);
  ImageWriteOptions opt;
  opt.parent = dir.File("base.img");
  auto w = ImageWriter::Create(dir.File("top.img"), opt);
  ASSERT_TRUE(w.ok());
  auto r = (*w)->AddRegion(Reg(0x2000, 8));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  // Writing on top of itself is refused.
  opt.parent = dir.File("base.img");
  auto self = ImageWriter::Create(dir.File("base.img"), opt);
  ASSERT_FALSE(self.ok());
  EXPECT_EQ(self.status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace pagewise
