// Image round trips: memory -> image -> memory, dedup and zero pages,
// regions, flat view, compression choices, concurrent writers.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

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

Region TestRegion(uint64_t addr, uint64_t len, uint64_t flat, const std::string& name) {
  Region r;
  r.address = addr;
  r.length = len;
  r.page_size = kPs;
  r.prot = 3;
  r.kind = RegionKind::kAnonymous;
  r.name = name;
  r.offset = flat;
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
    ASSERT_EQ(*(*w)->AddRegion(TestRegion(0x10000, r0.size(), 0, "heap")), 0u);
    ASSERT_EQ(*(*w)->AddRegion(TestRegion(0x900000, r1.size(), r0.size(), "stack")), 1u);
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

TEST(ImageStore, ZeroAndDuplicatePagesTakeNoDataSpace) {
  TempDir dir;
  constexpr size_t kN = 1000;
  std::vector<char> mem(kN * kPs, 0);
  // 500 zero pages, 250 copies of one page, 250 distinct pages.
  for (size_t i = 0; i < kN; ++i) {
    if (i % 2 == 0) continue;
    FillPage(mem.data() + i * kPs, 3, i % 4 == 1 ? 1 : i);
  }
  for (bool dedup : {true, false}) {
    const std::string path = dir.File(dedup ? "d.img" : "nd.img");
    ImageWriteOptions opt;
    opt.compression = Compression::kNone;
    opt.dedup = dedup;
    auto w = ImageWriter::Create(path, opt);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddRegion(TestRegion(0, mem.size(), 0, "m")).ok());
    ASSERT_TRUE((*w)->AddPages(0, 0, mem.data(), mem.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
    ImageStats st = (*w)->stats();
    const uint64_t stored = dedup ? 251 : 500;
    EXPECT_EQ(st.pages, kN);
    EXPECT_EQ(st.zero_pages, 500u);
    EXPECT_EQ(st.duplicate_pages, dedup ? 249u : 0u);
    EXPECT_EQ(st.stored_pages, stored);
    EXPECT_EQ(st.raw_bytes, stored * kPs);
    EXPECT_EQ(st.compressed_bytes, stored * kPs);
    EXPECT_EQ(st.file_bytes, FileSizeOf(path));
    // File: header + stored data + index (8 bytes a data page, 24 a run,
    // 40 a chunk of 16 pages, 60 for the index head and the region).
    const uint64_t chunks = (stored + 15) / 16;
    EXPECT_LE(FileSizeOf(path), 256 + stored * kPs + 500 * 8 + kN * 24 + chunks * 40 + 60);
    auto img = Image::Open(path);
    ASSERT_TRUE(img.ok());
    const ImageStats& read = (*img)->layers()[0].stats;
    EXPECT_EQ(read.zero_pages, st.zero_pages);
    EXPECT_EQ(read.duplicate_pages, st.duplicate_pages);
    EXPECT_EQ(read.stored_pages, st.stored_pages);
    EXPECT_EQ(read.file_bytes, st.file_bytes);
    std::vector<char> back(mem.size());
    ASSERT_TRUE((*img)->Read(0, 0, back.data(), back.size()).ok());
    EXPECT_EQ(0, std::memcmp(back.data(), mem.data(), mem.size()));
  }
  // An all-zero region stores nothing at all.
  ImageWriteOptions opt;
  auto w = ImageWriter::Create(dir.File("z.img"), opt);
  ASSERT_TRUE(w.ok());
  std::vector<char> zeros(4096 * kPs, 0);
  ASSERT_TRUE((*w)->AddRegion(TestRegion(0, zeros.size(), 0, "z")).ok());
  ASSERT_TRUE((*w)->AddPages(0, 0, zeros.data(), zeros.size()).ok());
  ASSERT_TRUE((*w)->Commit().ok());
  EXPECT_EQ((*w)->stats().stored_pages, 0u);
  EXPECT_LT(FileSizeOf(dir.File("z.img")), 1024u) << "16 MiB of zeros is one zero run";
}

TEST(ImageStore, CompressionShrinksCompressibleData) {
  TempDir dir;
  std::vector<char> mem(256 * kPs);
  for (size_t i = 0; i < mem.size(); ++i) mem[i] = static_cast<char>((i / 64) % 7 + (i % 3));
  for (Compression c : {Compression::kZstd, Compression::kLz4}) {
    ImageWriteOptions opt;
    opt.compression = c;
    opt.dedup = false;
    const std::string path = dir.File(std::string(CompressionName(c)));
    auto w = ImageWriter::Create(path, opt);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddRegion(TestRegion(0, mem.size(), 0, "m")).ok());
    ASSERT_TRUE((*w)->AddPages(0, 0, mem.data(), mem.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
    EXPECT_LT((*w)->stats().compressed_bytes * 4, (*w)->stats().raw_bytes) << CompressionName(c);
    auto img = Image::Open(path, {/*verify_data=*/true});
    ASSERT_TRUE(img.ok()) << img.status().ToString();
    std::vector<char> back(mem.size());
    ASSERT_TRUE((*img)->Read(0, 0, back.data(), back.size()).ok());
    EXPECT_EQ(0, std::memcmp(back.data(), mem.data(), mem.size()));
  }
}

TEST(ImageStore, ConcurrentAddPagesFromSeveralThreads) {
  TempDir dir;
  constexpr size_t kN = 2048;
  std::vector<char> mem(kN * kPs);
  for (size_t i = 0; i < kN; ++i) FillPage(mem.data() + i * kPs, 11, i % 700);  // with dups
  ImageWriteOptions opt;
  opt.chunk_bytes = 8192;  // many chunk hand-offs
  auto w = ImageWriter::Create(dir.File("c.img"), opt);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->AddRegion(TestRegion(0, mem.size(), 0, "m")).ok());
  std::vector<std::thread> threads;
  std::vector<Status> results(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Interleaved stripes, plus every thread rewriting stripe 0 (same content).
      for (size_t p = t; p < kN; p += 4) {
        Status s = (*w)->AddPages(0, p * kPs, mem.data() + p * kPs, kPs);
        if (s.ok()) s = (*w)->AddPages(0, 0, mem.data(), 4 * kPs);
        if (!s.ok()) {
          results[t] = s;
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const Status& s : results) ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE((*w)->Commit().ok());
  EXPECT_EQ((*w)->stats().stored_pages, 700u);
  auto img = Image::Open(dir.File("c.img"));
  ASSERT_TRUE(img.ok());
  ASSERT_TRUE((*img)->Verify().ok());
  // Concurrent readers, each with its own chunk cache.
  std::vector<int> bad(4, 0);
  threads.clear();
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<char> back(kPs * 3);
      for (size_t p = t; p + 3 <= kN; p += 5) {
        if (!(*img)->Read(0, p * kPs, back.data(), back.size()).ok() ||
            std::memcmp(back.data(), mem.data() + p * kPs, back.size()) != 0) {
          bad[t]++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

TEST(ImageStore, UncommittedWriterLeavesNothing) {
  TempDir dir;
  {
    auto w = ImageWriter::Create(dir.File("x.img"));
    ASSERT_TRUE(w.ok());
    std::vector<char> page(kPs, 5);
    ASSERT_TRUE((*w)->AddRegion(TestRegion(0, kPs, 0, "m")).ok());
    ASSERT_TRUE((*w)->AddPages(0, 0, page.data(), kPs).ok());
  }
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    ADD_FAILURE() << "left behind: " << e.path();
    ++files;
  }
  EXPECT_EQ(files, 0u);
}

TEST(ImageStore, RejectsBadArguments) {
  TempDir dir;
  auto w = ImageWriter::Create(dir.File("x.img"));
  ASSERT_TRUE(w.ok());
  Region bad = TestRegion(0, 3 * kPs + 1, 0, "m");
  EXPECT_EQ((*w)->AddRegion(bad).status().code(), Code::kInvalidArgument);
  bad = TestRegion(0, 3 * kPs, 0, "m");
  bad.page_size = 3000;
  EXPECT_EQ((*w)->AddRegion(bad).status().code(), Code::kInvalidArgument);
  ASSERT_TRUE((*w)->AddRegion(TestRegion(0, 4 * kPs, 0, "m")).ok());
  std::vector<char> page(kPs, 1);
  EXPECT_EQ((*w)->AddPages(1, 0, page.data(), kPs).code(), Code::kInvalidArgument);
  EXPECT_EQ((*w)->AddPages(0, 100, page.data(), kPs).code(), Code::kInvalidArgument);
  EXPECT_EQ((*w)->AddPages(0, 4 * kPs, page.data(), kPs).code(), Code::kInvalidArgument);
  ASSERT_TRUE((*w)->Commit().ok());
  EXPECT_EQ((*w)->Commit().code(), Code::kFailedPrecondition);
  auto img = Image::Open(dir.File("x.img"));
  ASSERT_TRUE(img.ok());
  std::vector<char> buf(kPs);
  EXPECT_EQ((*img)->Read(0, 4 * kPs, buf.data(), kPs).code(), Code::kInvalidArgument);
  EXPECT_EQ((*img)->Read(0, 1, buf.data(), kPs).code(), Code::kInvalidArgument);
  EXPECT_EQ((*img)->Read(1, 0, buf.data(), kPs).code(), Code::kInvalidArgument);
  EXPECT_EQ(ImageWriter::Create(dir.File("nodir/x.img")).status().code(), Code::kNotFound);
  EXPECT_EQ(Image::Open(dir.File("missing.img")).status().code(), Code::kNotFound);
  EXPECT_EQ(ParseCompression("brotli").status().code(), Code::kInvalidArgument);
}

TEST(ImageStore, OverlappingFlatOffsetsHaveNoFlatView) {
  TempDir dir;
  auto w = ImageWriter::Create(dir.File("x.img"));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->AddRegion(TestRegion(0x1000, 4 * kPs, 0, "a")).ok());
  ASSERT_TRUE((*w)->AddRegion(TestRegion(0x9000, 4 * kPs, 0, "b")).ok());
  ASSERT_TRUE((*w)->Commit().ok());
  auto img = Image::Open(dir.File("x.img"));
  ASSERT_TRUE(img.ok());
  std::vector<char> buf(kPs);
  EXPECT_EQ((*img)->ReadFlat(0, buf.data(), kPs).code(), Code::kFailedPrecondition);
}

INSTANTIATE_TEST_SUITE_P(AllCompressions, RoundTrip,
                         ::testing::Values(Compression::kNone, Compression::kZstd,
                                           Compression::kLz4),
                         [](const auto& info) { return std::string(CompressionName(info.param)); });

}  // namespace
}  // namespace pagewise
