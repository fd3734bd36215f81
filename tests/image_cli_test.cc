// End to end through the pagewise binary: import, export, inspect, verify,
// flatten and diff, including a damaged image that verify must reject
// naming the layer, region and offset.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "pagewise/image.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::FillPage;
using testing::TempDir;

constexpr uint32_t kPs = 4096;

struct CliRun {
  int status = -1;
  std::string out, err;
  nlohmann::json Json() const { return nlohmann::json::parse(out); }
};

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Runs `pagewise <args>` with stdout and stderr captured in files of `dir`.
CliRun Pagewise(const TempDir& dir, const std::string& args) {
  const std::string out = dir.File("stdout"), err = dir.File("stderr");
  const std::string cmd = std::string(PAGEWISE_CLI_PATH) + " " + args + " >" + out + " 2>" + err;
  CliRun r;
  int rc = std::system(cmd.c_str());
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

// "l<k>.img", built by appending: GCC 12 at -O3 (Release) reports a false
// -Wrestrict on `"literal" + std::string` here (a known GCC 12 false positive).
std::string LayerName(int k) {
  std::string name = "l";
  name += std::to_string(k);
  name += ".img";
  return name;
}

bool Contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// A flat memory file of `pages` pages: zero pages, repeated pages, random
// pages, half-random pages, and a trailing hole made by extending the file.
void MakeRaw(const std::string& path, size_t pages, size_t hole_pages) {
  std::vector<char> data(pages * kPs, 0);
  for (size_t i = 0; i < pages; ++i) {
    char* p = data.data() + i * kPs;
    switch (i % 6) {
      case 0:
      case 3:
        break;  // zero
      case 1:
        FillPage(p, 1, 0);
        break;  // all the same page
      case 2:
        FillPage(p, 2, i);
        break;
      default:
        FillPage(p, 3, i);
        std::memset(p + kPs / 2, 'q', kPs / 2);
    }
  }
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>((pages + hole_pages) * kPs)), 0);
  close(fd);
}

// Imports `dir`/mem.raw (MakeRaw, `pages` pages) uncompressed into `img`.
void ImportRaw(const TempDir& dir, size_t pages, const std::string& img) {
  MakeRaw(dir.File("mem.raw"), pages, 0);
  ASSERT_EQ(Pagewise(dir, "import " + dir.File("mem.raw") + " " + img + " --compress none").status,
            0);
}

// Flips one bit inside the stored copy of `page` (an uncompressed image
// holds its bytes as they are). False if the page's bytes are not found.
bool DamageStoredPage(const std::string& img, const std::vector<char>& page) {
  const std::string bytes = Slurp(img);
  const size_t at = bytes.find(std::string(page.data(), 64));
  if (at == std::string::npos) return false;
  std::fstream f(img, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(at + 10));
  f.put(static_cast<char>(bytes[at + 10] ^ 0x20));
  return f.good();
}

TEST(ImageCli, ImportExportIsByteIdenticalAndSparse) {
  TempDir dir;
  const std::string raw = dir.File("mem.raw");
  MakeRaw(raw, 600, 424);
  for (const char* comp : {"zstd", "lz4", "none"}) {
    const std::string img = dir.File(std::string("mem-") + comp + ".img");
    CliRun imp = Pagewise(dir, "import " + raw + " " + img + " --compress " + comp + " --json");
    ASSERT_EQ(imp.status, 0) << imp.err;
    EXPECT_EQ(imp.err, "") << "no progress output when stderr is not a terminal";
    nlohmann::json st = imp.Json()["stats"];
    EXPECT_EQ(st["pages"], 1024);
    EXPECT_EQ(st["zero_pages"], 200 + 424);
    EXPECT_EQ(st["stored_pages"], 1 + 100 + 200);
    EXPECT_EQ(st["duplicate_pages"], 99);
    if (std::string(comp) != "none") {
      EXPECT_LT(st["compressed_bytes"].get<uint64_t>(), st["raw_bytes"].get<uint64_t>());
    }
    const std::string back = dir.File(std::string("back-") + comp + ".raw");
    CliRun exp = Pagewise(dir, "export " + img + " " + back);
    ASSERT_EQ(exp.status, 0) << exp.err;
    ASSERT_EQ(Slurp(back), Slurp(raw)) << comp;
    struct stat sb;
    ASSERT_EQ(stat(back.c_str(), &sb), 0);
    EXPECT_LT(static_cast<uint64_t>(sb.st_blocks) * 512, 600u * kPs) << "zero pages are holes";
  }
}

// An export that fails half way (a damaged chunk in the middle of the
// image) leaves an existing RAW as it was, and no temporary file.
TEST(ImageCli, FailedExportLeavesTheOldFileAndNoPartialOne) {
  TempDir dir;
  const std::string img = dir.File("a.img");
  ImportRaw(dir, 64, img);
  std::vector<char> page(kPs);
  FillPage(page.data(), 2, 38);  // MakeRaw's page 38, in the middle of the image
  ASSERT_TRUE(DamageStoredPage(img, page));
  const std::string out = dir.File("out.raw");
  {
    std::ofstream f(out, std::ios::binary);
    f << "previous content";
  }
  CliRun bad = Pagewise(dir, "export " + img + " " + out);
  EXPECT_NE(bad.status, 0);
  EXPECT_TRUE(Contains(bad.err, "checksum")) << bad.err;
  EXPECT_TRUE(Contains(bad.err, "left unchanged")) << bad.err;
  EXPECT_EQ(Slurp(out), "previous content");
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().string().find(".pagewise-export-"), std::string::npos) << e.path();
    files++;
  }
  EXPECT_GT(files, 0u);
}

TEST(ImageCli, InspectReportsLayersRegionsAndCounts) {
  TempDir dir;
  MakeRaw(dir.File("mem.raw"), 60, 4);
  ASSERT_EQ(Pagewise(dir, "import " + dir.File("mem.raw") + " " + dir.File("a.img")).status, 0);
  CliRun r = Pagewise(dir, "inspect --json " + dir.File("a.img"));
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = r.Json();
  ASSERT_EQ(j["layers"].size(), 1u);
  EXPECT_EQ(j["layers"][0]["compression"], "zstd");
  EXPECT_EQ(j["layers"][0]["stats"]["zero_pages"], 20 + 4);
  ASSERT_EQ(j["regions"].size(), 1u);
  EXPECT_EQ(j["regions"][0]["kind"], "flat");
  EXPECT_EQ(j["regions"][0]["length"], 64 * kPs);
  EXPECT_EQ(j["regions"][0]["data_pages"], 40);
  EXPECT_EQ(j["regions"][0]["zero_pages"], 24);
  EXPECT_EQ(j["flat_size"], 64 * kPs);
  CliRun text = Pagewise(dir, "inspect " + dir.File("a.img"));
  ASSERT_EQ(text.status, 0);
  EXPECT_TRUE(Contains(text.out, "duplicate")) << text.out;
  EXPECT_TRUE(Contains(text.out, "compressed")) << text.out;
}

TEST(ImageCli, VerifyRejectsDamageNamingLayerRegionAndOffset) {
  TempDir dir;
  const std::string img = dir.File("a.img");
  ImportRaw(dir, 64, img);
  CliRun ok = Pagewise(dir, "verify " + img);
  ASSERT_EQ(ok.status, 0) << ok.err;
  EXPECT_TRUE(Contains(ok.out, "OK"));

  // Damage the data of page 5.
  std::vector<char> page(kPs);
  FillPage(page.data(), 3, 5);  // MakeRaw's page 5: FillPage(3, 5) + a 'q' half
  std::memset(page.data() + kPs / 2, 'q', kPs / 2);
  ASSERT_TRUE(DamageStoredPage(img, page));
  CliRun bad = Pagewise(dir, "verify " + img);
  EXPECT_NE(bad.status, 0);
  EXPECT_TRUE(Contains(bad.err, img)) << bad.err;
  EXPECT_TRUE(Contains(bad.err, "region 0")) << bad.err;
  // Page 5 is the 4th stored page of its chunk: the chunk's first user is
  // reported, page 1 (the first data page).
  EXPECT_TRUE(Contains(bad.err, "offset 0x1000")) << bad.err;
  CliRun js = Pagewise(dir, "verify --json " + img);
  EXPECT_NE(js.status, 0);
  nlohmann::json j = js.Json();
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["layer"], img);
  EXPECT_EQ(j["region"], 0);
  EXPECT_EQ(j["offset"], kPs);

  // Header damage: named by layer and file offset.
  {
    std::fstream f(img, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  CliRun hdr = Pagewise(dir, "verify --json " + img);
  EXPECT_NE(hdr.status, 0);
  j = hdr.Json();
  EXPECT_EQ(j["layer"], img);
  EXPECT_EQ(j["region"], -1);
  EXPECT_EQ(j["code"], "corruption");
}

// Builds a chain of three layers through the library.
void MakeChain(const TempDir& dir) {
  std::vector<char> mem(32 * kPs, 0);
  Region r;
  r.address = 0x7000000;
  r.length = mem.size();
  r.offset = 0;
  for (int k = 0; k < 3; ++k) {
    ImageWriteOptions opt;
    if (k > 0) opt.parent = dir.File(LayerName(k - 1));
    auto w = ImageWriter::Create(dir.File(LayerName(k)), opt);
    ASSERT_TRUE(w.ok());
    if (k == 0) {
      ASSERT_TRUE((*w)->AddRegion(r).ok());
    }
    for (size_t p = k; p < 32; p += 3 + k) {
      FillPage(mem.data() + p * kPs, 10 + k, p);
      ASSERT_TRUE((*w)->AddPages(0, p * kPs, mem.data() + p * kPs, kPs).ok());
    }
    ASSERT_TRUE((*w)->Commit().ok());
  }
}

TEST(ImageCli, FlattenAndDiff) {
  TempDir dir;
  MakeChain(dir);
  CliRun fl =
      Pagewise(dir, "flatten " + dir.File("l2.img") + " " + dir.File("flat.img") + " --json");
  ASSERT_EQ(fl.status, 0) << fl.err;
  EXPECT_EQ(fl.Json()["layers_merged"], 3);
  CliRun ins = Pagewise(dir, "inspect --json " + dir.File("flat.img"));
  ASSERT_EQ(ins.status, 0);
  EXPECT_EQ(ins.Json()["layers"].size(), 1u);
  ASSERT_EQ(Pagewise(dir, "verify " + dir.File("flat.img")).status, 0);

  CliRun same =
      Pagewise(dir, "diff --json --exit-code " + dir.File("l2.img") + " " + dir.File("flat.img"));
  ASSERT_EQ(same.status, 0) << same.err;
  EXPECT_EQ(same.Json()["differing_pages"], 0);

  ASSERT_EQ(Pagewise(dir, "export " + dir.File("l2.img") + " " + dir.File("a.raw")).status, 0);
  ASSERT_EQ(Pagewise(dir, "export " + dir.File("flat.img") + " " + dir.File("b.raw")).status, 0);
  EXPECT_EQ(Slurp(dir.File("a.raw")), Slurp(dir.File("b.raw")));

  // l1 -> l2 changed exactly the pages layer 2 wrote: 2, 7, 12, 17, 22, 27.
  CliRun d = Pagewise(dir, "diff --json " + dir.File("l1.img") + " " + dir.File("l2.img"));
  ASSERT_EQ(d.status, 0) << d.err;
  nlohmann::json j = d.Json();
  EXPECT_EQ(j["differing_pages"], 6);
  ASSERT_EQ(j["ranges"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(j["ranges"][i]["region"], 0);
    EXPECT_EQ(j["ranges"][i]["offset"], (2 + 5 * i) * kPs);
    EXPECT_EQ(j["ranges"][i]["length"], kPs);
  }
  CliRun ec = Pagewise(dir, "diff --exit-code " + dir.File("l1.img") + " " + dir.File("l2.img"));
  EXPECT_EQ(ec.status, 1);
  EXPECT_TRUE(Contains(ec.out, "6 page(s) differ")) << ec.out;
}

TEST(ImageCli, ClearErrors) {
  TempDir dir;
  {
    std::ofstream f(dir.File("odd.raw"));
    f << "not a page multiple";
  }
  CliRun odd = Pagewise(dir, "import " + dir.File("odd.raw") + " " + dir.File("x.img"));
  EXPECT_EQ(odd.status, 2);
  EXPECT_TRUE(Contains(odd.err, "not a multiple of the page size")) << odd.err;
  EXPECT_FALSE(std::ifstream(dir.File("x.img")).good());
  CliRun missing = Pagewise(dir, "verify " + dir.File("nope.img"));
  EXPECT_NE(missing.status, 0);
  EXPECT_TRUE(Contains(missing.err, "nope.img")) << missing.err;
  CliRun badc = Pagewise(
      dir, "import " + dir.File("odd.raw") + " " + dir.File("x.img") + " --compress brotli");
  EXPECT_EQ(badc.status, 2);
  EXPECT_TRUE(Contains(badc.err, "brotli")) << badc.err;
  // Odd page size works when it divides the file.
  MakeRaw(dir.File("m.raw"), 4, 0);
  CliRun ps =
      Pagewise(dir, "import --page-size 1024 " + dir.File("m.raw") + " " + dir.File("p.img"));
  ASSERT_EQ(ps.status, 0) << ps.err;
  ASSERT_EQ(Pagewise(dir, "export " + dir.File("p.img") + " " + dir.File("p.raw")).status, 0);
  EXPECT_EQ(Slurp(dir.File("p.raw")), Slurp(dir.File("m.raw")));
}

}  // namespace
}  // namespace pagewise
