// Image round trips: memory -> image -> memory, dedup and zero pages,
// regions, flat view, compression choices, concurrent writers.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "pagewise/image.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::FillPage;
using testing::TempDir;

constexpr uint32_t kPs = 4096;

uint64_t FileSizeOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// A region of `pages` pages with a pattern: page i is random data seeded by
// (seed, i), except multiples of 3 are zero and multiples of 5 repeat page 1.
std::vector<char> Pattern(size_t pages, uint64_t seed) {
  std::vector<char> v(pages * kPs, 0);
  for (size_t i = 0; i < pages; ++i) {
    if (i % 3 == 0) continue;
    FillPage(v.data() + i * kPs, seed, i % 5 == 0 ? 1 : i);
  }
  return v;
}

RegionInfo Region(uint64_t addr, uint64_t len, uint64_t flat, const std::string& name) {
  RegionInfo r;
  r.address = addr;
  r.length = len;
  r.page_size = kPs;
  r.prot = 3;
  r.kind = RegionKind::kAnonymous;
  r.name = name;
  r.flat_offset = flat;
  return r;
}

class RoundTrip : public ::testing::TestWithParam<Compression> {};

TEST_P(RoundTrip, MemoryToImageToMemoryIsByteIdentical) {
  TempDir dir;
  const std::string path = dir.File("a.img");
  std::vector<char> r0 = Pattern(300, 7), r1 = Pattern(77, 9);
  ImageWriteOptions opt;
  opt.compression = GetParam();
  {
    auto w = ImageWriter::Create(path, opt);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_EQ(*(*w)->AddRegion(Region(0x10000, r0.size(), 0, "heap")), 0u);
    ASSERT_EQ(*(*w)->AddRegion(Region(0x900000, r1.size(), r0.size(), "stack")), 1u);
    // Out of order and in pieces.
    ASSERT_TRUE((*w)->AddPages(0, 100 * kPs, r0.data() + 100 * kPs, 200 * kPs).ok());
    ASSERT_TRUE((*w)->AddPages(1, 0, r1.data(), r1.size()).ok());
    ASSERT_TRUE((*w)->AddPages(0, 0, r0.data(), 100 * kPs).ok());
    EXPECT_FALSE(Exists(path)) << "the image must appear only at Commit";
    ASSERT_TRUE((*w)->Commit().ok());
    ImageStats st = (*w)->stats();
    EXPECT_EQ(st.pages, 377u);
    EXPECT_EQ(st.file_bytes, FileSizeOf(path));
  }
  auto img = Image::Open(path);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  ASSERT_EQ((*img)->regions().size(), 2u);
  EXPECT_EQ((*img)->regions()[1].name, "stack");
  EXPECT_EQ((*img)->regions()[1].address, 0x900000u);
  EXPECT_EQ((*img)->regions()[0].prot, 3u);
  std::vector<char> back(r0.size());
  ASSERT_TRUE((*img)->Read(0, 0, back.data(), back.size()).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), r0.data(), r0.size()));
  back.assign(r1.size(), 1);
  ASSERT_TRUE((*img)->Read(1, 0, back.data(), back.size()).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), r1.data(), r1.size()));
  // Flat view is both regions back to back.
  EXPECT_EQ((*img)->flat_size(), r0.size() + r1.size());
  std::vector<char> flat((*img)->flat_size());
  ASSERT_TRUE((*img)->ReadFlat(0, flat.data(), flat.size()).ok());
  EXPECT_EQ(0, std::memcmp(flat.data(), r0.data(), r0.size()));
  EXPECT_EQ(0, std::memcmp(flat.data() + r0.size(), r1.data(), r1.size()));
  // Unaligned flat read across the region boundary.
  std::vector<char> part(10000);
  ASSERT_TRUE((*img)->ReadFlat(r0.size() - 5000, part.data(), part.size()).ok());
  EXPECT_EQ(0, std::memcmp(part.data(), flat.data() + r0.size() - 5000, part.size()));
  VerifyError err;
  EXPECT_TRUE((*img)->Verify(&err).ok());
  EXPECT_EQ((*img)->layers()[0].compression, GetParam());
}

INSTANTIATE_TEST_SUITE_P(AllCompressions, RoundTrip,
                         ::testing::Values(Compression::kNone, Compression::kZstd,
                                           Compression::kLz4),
                         [](const auto& info) { return std::string(CompressionName(info.param)); });

}  // namespace
}  // namespace pagewise
