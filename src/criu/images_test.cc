// CRIU image parsing and dump layout on synthetic images: protobuf wire
// decoding, every image type we read, malformed input, and a dump chain
// with PE_PARENT pages resolved from a parent directory (what `criu dump
// --prev-images-dir` writes; not producible with real CRIU on a kernel
// without soft-dirty, so built here byte by byte as CRIU writes them).
#include "criu/images.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "criu/dump.h"
#include "criu/wire.h"
#include "gtest/gtest.h"
#include "pagewise/criu.h"
#include "pagewise/image.h"
#include "testing/criu_images.h"
#include "testing/test_util.h"

namespace pagewise::criu {
namespace {

using testimg::Field;
using testimg::Varint;

TEST(CriuWire, DecodesVarintsAndBytes) {
  const std::string msg = Field(1, 300) + Field(2, "abc") + Field(3, 1ull << 63);
  WireReader r(msg);
  WireField f;
  ASSERT_TRUE(r.Next(&f).ok());
  EXPECT_EQ(f.number, 1u);
  EXPECT_EQ(f.value, 300u);
  ASSERT_TRUE(r.Next(&f).ok());
  EXPECT_EQ(f.type, WireType::kBytes);
  EXPECT_EQ(f.bytes, "abc");
  ASSERT_TRUE(r.Next(&f).ok());
  EXPECT_EQ(f.value, 1ull << 63);
  EXPECT_TRUE(r.done());
  EXPECT_EQ(ZigZag(3), -2);
}

TEST(CriuWire, RefusesMalformedInput) {
  for (const std::string& bad :
       {std::string("\x08", 1),
        std::string("\x12\x05"
                    "ab"),
        std::string("\x0b"), std::string(11, '\xff'), std::string("\x00\x01", 2)}) {
    WireReader r(bad);
    WireField f;
    Status st = r.Next(&f);
    EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  }
}

TEST(CriuImages, ParsesPagemapWithOldAndNewEntryForms) {
  const std::string file = testimg::Pagemap(
      7, {{0x10000, 2, kPeLazy | kPePresent, true}, {0x20000, 1, 0, false /* old form */}});
  Result<Pagemap> pm = ParsePagemapImage(file, "pagemap-1.img", 4096);
  ASSERT_TRUE(pm.ok()) << pm.status().ToString();
  EXPECT_EQ(pm->pages_id, 7u);
  ASSERT_EQ(pm->entries.size(), 2u);
  EXPECT_EQ(pm->entries[0].nr_pages, 2u);
  EXPECT_EQ(pm->entries[0].flags, kPeLazy | kPePresent);
  EXPECT_EQ(pm->entries[1].flags, kPePresent);  // no flags field: present
}

TEST(CriuImages, RefusesBadPagemaps) {
  const std::string good = testimg::Pagemap(1, {{0x10000, 2, kPePresent, true}});
  EXPECT_EQ(ParsePagemapImage(good.substr(0, good.size() - 2), "p", 4096).status().code(),
            Code::kCorruption);
  std::string wrong_magic = good;
  wrong_magic[4] ^= 1;
  Status st = ParsePagemapImage(wrong_magic, "p", 4096).status();
  EXPECT_NE(st.message().find("type magic"), std::string::npos) << st.ToString();
  // Overlapping, unaligned, empty entries.
  for (const auto& e : std::vector<std::vector<testimg::Entry>>{
           {{0x10000, 2, kPePresent, true}, {0x11000, 1, kPePresent, true}},
           {{0x10001, 1, kPePresent, true}},
           {{0x10000, 0, kPePresent, true}},
           {{0x10000, 1, kPePresent | kPeParent, true}}}) {
    EXPECT_EQ(ParsePagemapImage(testimg::Pagemap(1, e), "p", 4096).status().code(),
              Code::kCorruption);
  }
}

TEST(CriuImages, InventoryVersionIsChecked) {
  EXPECT_TRUE(ParseInventoryImage(testimg::Inventory(2), "inv").ok());
  Status st = ParseInventoryImage(testimg::Inventory(3), "inv").status();
  EXPECT_EQ(st.code(), Code::kNotSupported);
  EXPECT_NE(st.message().find("version 3"), std::string::npos);
}

TEST(CriuImages, ParsesPstreeAndMm) {
  Result<std::vector<PstreeEntry>> t = ParsePstreeImage(testimg::Pstree({{42, {42, 43}}}), "ps");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->size(), 1u);
  EXPECT_EQ((*t)[0].pid, 42u);
  EXPECT_EQ((*t)[0].threads.size(), 2u);
  Result<Mm> mm = ParseMmImage(testimg::Mm({{0x10000, 0x14000}, {0x14000, 0x20000}}), "mm", 4096);
  ASSERT_TRUE(mm.ok()) << mm.status().ToString();
  ASSERT_EQ(mm->vmas.size(), 2u);
  EXPECT_TRUE(mm->vmas[0].lazy_capable());
  EXPECT_EQ(ParseMmImage(testimg::Mm({{0x14000, 0x10000}}), "mm", 4096).status().code(),
            Code::kCorruption);
}

// A two-dump chain: the parent holds pages 0..3 of 0x10000; the child
// dumped page 1 again (present) and takes 0, 2, 3 from the parent; the
// child's entry spans two VMAs.
class CriuChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    parent_ = tmp_.File("parent-dump");
    child_ = tmp_.File("child-dump");
    const std::vector<testimg::Vma> vmas = {{0x10000, 0x12000}, {0x12000, 0x20000}};
    testimg::WriteDump(parent_, 5, vmas, {{0x10000, 4, kPeLazy | kPePresent, true}},
                       testimg::Pages(0x10000, 4, 'P'));
    testimg::WriteDump(child_, 5, vmas,
                       {{0x10000, 1, kPeLazy | kPeParent, true},
                        {0x11000, 1, kPeLazy | kPePresent, true},
                        {0x12000, 2, kPeLazy | kPeParent, true}},
                       testimg::Pages(0x11000, 1, 'C'));
    std::filesystem::create_directory_symlink("../parent-dump", child_ + "/parent");
  }
  testing::TempDir tmp_;
  std::string parent_, child_;
};

TEST_F(CriuChainTest, ParentPagesAreResolved) {
  Result<std::shared_ptr<CriuDump>> d = CriuDump::Open(child_);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ((*d)->chain_length(), 2u);
  EXPECT_EQ((*d)->tasks().size(), 1u);
  EXPECT_EQ((*d)->tasks()[0].lazy_pages, 4u);
  ASSERT_EQ((*d)->regions().size(), 3u);
  std::string got(4 * 4096, '\0');
  ASSERT_TRUE((*d)->Read(0, got.data(), got.size()).ok());
  EXPECT_EQ(got.substr(0, 4096), testimg::Pages(0x10000, 1, 'P'));
  EXPECT_EQ(got.substr(4096, 4096), testimg::Pages(0x11000, 1, 'C'));
  EXPECT_EQ(got.substr(8192), testimg::Pages(0x12000, 2, 'P'));
}

TEST_F(CriuChainTest, MissingParentIsNamed) {
  std::filesystem::remove(child_ + "/parent");
  Result<std::shared_ptr<CriuDump>> d = CriuDump::Open(child_);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("PE_PARENT"), std::string::npos) << d.status().ToString();
}

TEST_F(CriuChainTest, ImportedAsLayersMatchesTheDump) {
  const std::string img = tmp_.File("chain.pwi");
  Result<CriuImportReport> r = ImportCriuDump(child_, img);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->layers.size(), 2u);
  Result<std::unique_ptr<Image>> opened = Image::Open(img);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ((*opened)->layers().size(), 2u);
  std::string got(4 * 4096, '\0');
  ASSERT_TRUE((*opened)->ReadFlat(0, got.data(), got.size()).ok());
  EXPECT_EQ(got.substr(4096, 4096), testimg::Pages(0x11000, 1, 'C'));
  EXPECT_EQ(got.substr(8192), testimg::Pages(0x12000, 2, 'P'));
  // The top layer holds only the page the child dumped itself.
  EXPECT_EQ((*opened)->layers()[0].stats.pages, 1u);
}

TEST_F(CriuChainTest, TruncatedPagesFileIsNamed) {
  std::filesystem::resize_file(parent_ + "/pages-1.img", 4096);
  Result<std::shared_ptr<CriuDump>> d = CriuDump::Open(child_);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("truncated dump"), std::string::npos)
      << d.status().ToString();
}

}  // namespace
}  // namespace pagewise::criu
