// Damaged images: every single-byte corruption and every truncation of a
// small two-layer chain is caught (by Open, or by both Verify and Read) with
// a message naming the damaged layer; never a crash. Format version refusal.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "base/bytes.h"
#include "image/format.h"
#include "pagewise/image.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::TempDir;

// Fills `len` bytes (testing::FillPage writes a whole system page).
void Fill(char* p, size_t len, uint64_t seed, uint64_t index) {
  std::mt19937_64 rng(seed * 1000003 + index);
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
}

std::vector<uint8_t> Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// Overwrites in place (no truncation to zero first: ext4 flushes files
// replaced that way on close, which makes thousands of rewrites slow).
void Spit(const std::string& path, const std::vector<uint8_t>& bytes) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(bytes.size())), 0);
  close(fd);
}

bool Contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// A small chain: base (zstd, 3 regions of 512-byte pages in 4 KiB chunks,
// with zero and duplicate pages) and top (lz4, a few pages and zero pages).
class Corruption : public ::testing::Test {
 protected:
  static constexpr uint32_t kPs = 512;
  static constexpr size_t kPages = 16;

  void SetUp() override {
    base_ = dir_.File("base.img");
    top_ = dir_.File("top.img");
    ImageWriteOptions opt;
    opt.compression = Compression::kZstd;
    opt.chunk_bytes = 4096;
    auto w = ImageWriter::Create(base_, opt);
    ASSERT_TRUE(w.ok());
    std::vector<char> mem(kPages * kPs, 0);
    for (size_t i = 0; i < kPages; ++i) {
      if (i % 5 == 4) continue;  // zero
      // Half-compressible pages: a random half and a repeated half.
      Fill(mem.data() + i * kPs, kPs, 1, i % 7 == 6 ? 2 : i);
      std::memset(mem.data() + i * kPs + kPs / 2, static_cast<int>(i), kPs / 2);
    }
    for (int r = 0; r < 3; ++r) {
      Region reg;
      reg.address = 0x10000 * (r + 1);
      reg.length = kPages * kPs;
      reg.page_size = kPs;
      reg.name = "region" + std::to_string(r);
      reg.offset = r * kPages * kPs;
      ASSERT_TRUE((*w)->AddRegion(reg).ok());
      ASSERT_TRUE((*w)->AddPages(r, 0, mem.data(), mem.size()).ok());
    }
    ASSERT_TRUE((*w)->Commit().ok());

    opt.compression = Compression::kLz4;
    opt.parent = base_;
    auto t = ImageWriter::Create(top_, opt);
    ASSERT_TRUE(t.ok());
    std::vector<char> pages(3 * kPs);
    for (size_t i = 0; i < 3; ++i) Fill(pages.data() + i * kPs, kPs, 9, i);
    std::memset(pages.data() + kPs, 'x', kPs / 2);
    ASSERT_TRUE((*t)->AddPages(1, 2 * kPs, pages.data(), pages.size()).ok());
    ASSERT_TRUE((*t)->AddZeroPages(2, 8 * kPs, 2 * kPs).ok());
    ASSERT_TRUE((*t)->Commit().ok());

    auto img = Image::Open(top_);
    ASSERT_TRUE(img.ok());
    ASSERT_TRUE((*img)->Verify().ok());
    for (uint32_t r = 0; r < 3; ++r) {
      expect_[r].resize(kPages * kPs);
      ASSERT_TRUE((*img)->Read(r, 0, expect_[r].data(), expect_[r].size()).ok());
    }
  }

  // Checks that the chain at top_ is rejected or reads correctly; a damaged
  // `layer` must be named. Returns false (with a failure) if damage slipped
  // through.
  void ExpectCaught(const std::string& layer, const std::string& what) {
    VerifyError verr;
    Status whole = VerifyImage(top_, &verr);
    EXPECT_EQ(whole.code(), Code::kCorruption) << what << ": " << whole.ToString();
    EXPECT_EQ(verr.layer, layer) << what << ": " << whole.ToString();
    auto img = Image::Open(top_);
    if (!img.ok()) {
      EXPECT_EQ(img.status().code(), Code::kCorruption) << what << ": " << img.status().ToString();
      EXPECT_TRUE(Contains(img.status().message(), layer))
          << what << ": " << img.status().ToString();
      EXPECT_EQ(verr.region, -1) << what;
      return;
    }
    VerifyError err;
    Status v = (*img)->Verify(&err);
    EXPECT_EQ(v.code(), Code::kCorruption) << what << ": Verify missed it";
    EXPECT_EQ(err.layer, layer) << what;
    EXPECT_GE(err.region, 0) << what << ": every chunk of this chain is in use";
    bool read_failed = false;
    for (uint32_t r = 0; r < 3; ++r) {
      std::vector<char> back(kPages * kPs);
      Status s = (*img)->Read(r, 0, back.data(), back.size());
      if (!s.ok()) {
        read_failed = true;
        EXPECT_EQ(s.code(), Code::kCorruption) << what;
        EXPECT_TRUE(Contains(s.message(), layer)) << what << ": " << s.ToString();
        EXPECT_TRUE(Contains(s.message(), "region " + std::to_string(r))) << s.ToString();
        EXPECT_TRUE(Contains(s.message(), "offset")) << s.ToString();
      } else {
        EXPECT_EQ(0, std::memcmp(back.data(), expect_[r].data(), back.size()))
            << what << ": wrong data served without an error (region " << r << ")";
      }
    }
    EXPECT_TRUE(read_failed) << what << ": Read missed it";
  }

  TempDir dir_;
  std::string base_, top_;
  std::vector<char> expect_[3];
};

TEST_F(Corruption, EveryFlippedByteIsCaught) {
  for (const std::string& layer : {top_, base_}) {
    const std::vector<uint8_t> pristine = Slurp(layer);
    ASSERT_GT(pristine.size(), 1000u);
    int fd = open(layer.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    // One corruption per byte; the damage alternates between a low bit, the
    // high bit and a multi-bit pattern.
    const uint8_t kXor[3] = {0x01, 0x80, 0xa4};
    for (size_t i = 0; i < pristine.size(); ++i) {
      const uint8_t x = kXor[i % 3];
      uint8_t b = pristine[i] ^ x;
      ASSERT_EQ(pwrite(fd, &b, 1, static_cast<off_t>(i)), 1);
      ExpectCaught(layer, layer + " byte " + std::to_string(i) + " ^ " + std::to_string(x));
      ASSERT_EQ(pwrite(fd, &pristine[i], 1, static_cast<off_t>(i)), 1);
      if (HasFailure()) break;
    }
    close(fd);
  }
}

TEST_F(Corruption, EveryTruncationAndExtensionIsCaught) {
  for (const std::string& layer : {top_, base_}) {
    const std::vector<uint8_t> pristine = Slurp(layer);
    for (size_t len = 0; len < pristine.size(); ++len) {
      ASSERT_EQ(truncate(layer.c_str(), static_cast<off_t>(len)), 0);
      auto img = Image::Open(top_);
      ASSERT_FALSE(img.ok()) << layer << " truncated to " << len;
      EXPECT_EQ(img.status().code(), Code::kCorruption) << img.status().ToString();
      EXPECT_TRUE(Contains(img.status().message(), layer)) << img.status().ToString();
    }
    std::vector<uint8_t> longer = pristine;
    longer.push_back(0);
    Spit(layer, longer);
    EXPECT_EQ(Image::Open(top_).status().code(), Code::kCorruption);
    Spit(layer, pristine);
    ASSERT_TRUE(Image::Open(top_).ok());
  }
}

TEST_F(Corruption, RandomMultiByteDamageNeverCrashes) {
  const std::vector<uint8_t> pristine = Slurp(base_);
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 1000; ++iter) {
    std::vector<uint8_t> bad = pristine;
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < n; ++k) bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    Spit(base_, bad);
    ExpectCaught(base_, "iteration " + std::to_string(iter));
    if (HasFailure()) break;
  }
}

// Rewrites the header of `path` through `edit`, with a valid checksum.
void EditHeader(const std::string& path, const std::function<void(uint8_t*)>& edit) {
  std::vector<uint8_t> b = Slurp(path);
  edit(b.data());
  StoreLe64(b.data() + 248, image::Checksum64(b.data(), 248));
  Spit(path, b);
}

TEST_F(Corruption, OtherVersionsAreRefusedNamingBoth) {
  const std::vector<uint8_t> pristine = Slurp(top_);
  for (uint32_t v : {0u, 2u, 77u}) {
    EditHeader(top_, [v](uint8_t* h) { StoreLe32(h + 8, v); });
    auto img = Image::Open(top_);
    ASSERT_FALSE(img.ok());
    EXPECT_EQ(img.status().code(), Code::kNotSupported) << img.status().ToString();
    EXPECT_TRUE(Contains(img.status().message(), "version " + std::to_string(v)))
        << img.status().ToString();
    EXPECT_TRUE(Contains(img.status().message(), "version 1")) << img.status().ToString();
    EXPECT_TRUE(Contains(img.status().message(), top_));
  }
  Spit(top_, pristine);
  // Unknown incompatible flags are refused; unknown compatible flags ignored.
  EditHeader(top_, [](uint8_t* h) { StoreLe32(h + 16, 4); });
  EXPECT_EQ(Image::Open(top_).status().code(), Code::kNotSupported);
  Spit(top_, pristine);
  EditHeader(top_, [](uint8_t* h) { StoreLe32(h + 20, 0x80); });
  EXPECT_TRUE(Image::Open(top_).ok());
  // A version change without a matching checksum is damage, not a version.
  std::vector<uint8_t> b = pristine;
  b[8] = 2;
  Spit(top_, b);
  EXPECT_EQ(Image::Open(top_).status().code(), Code::kCorruption);
}

TEST_F(Corruption, NotAnImage) {
  Spit(top_, std::vector<uint8_t>(4096, 'A'));
  auto img = Image::Open(top_);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(img.status().message(), "not a pagewise image")) << img.status().ToString();
}

}  // namespace
}  // namespace pagewise
