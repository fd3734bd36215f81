// FlattenImage: work follows the stored content, not declared sizes (a
// few-KiB image declaring exabytes of absent and zero pages flattens at
// once and keeps its shape), and an output that is a layer of the chain
// (by any name) is refused with the chain intact.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <vector>

#include "pagewise/image.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::TempDir;

constexpr uint64_t kHuge = uint64_t{1} << 62;  // the format's largest region
constexpr int kFailureTimeoutSeconds = 120;    // failure detector only

Region Reg(uint64_t length, uint64_t flat_offset) {
  Region r;
  r.length = length;
  r.offset = flat_offset;
  r.page_size = 4096;
  r.name = "r";
  return r;
}

// Region 0: 2^62 bytes, nothing recorded. Region 1: 2^62 bytes recorded
// as zero. Region 2: 16 pages of (compressible) data. About 1 KiB in all.
std::string WriteCrafted(const TempDir& dir) {
  const std::string path = dir.File("crafted.img");
  auto w = ImageWriter::Create(path);
  EXPECT_TRUE(w.ok());
  EXPECT_TRUE((*w)->AddRegion(Reg(kHuge, 0)).ok());
  EXPECT_TRUE((*w)->AddRegion(Reg(kHuge, 0)).ok());
  EXPECT_TRUE((*w)->AddRegion(Reg(16 * 4096, 0)).ok());
  EXPECT_TRUE((*w)->AddZeroPages(1, 0, kHuge).ok());
  std::vector<char> data(16 * 4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(1 + i / 4096 + i % 7);
  EXPECT_TRUE((*w)->AddPages(2, 0, data.data(), data.size()).ok());
  EXPECT_TRUE((*w)->Commit().ok());
  return path;
}

// Runs fn on a thread; fails the test if it does not finish in time.
Status Bounded(std::function<Status()> fn) {
  std::packaged_task<Status()> task(std::move(fn));
  std::future<Status> done = task.get_future();
  std::thread t(std::move(task));
  if (done.wait_for(std::chrono::seconds(kFailureTimeoutSeconds)) != std::future_status::ready) {
    t.detach();
    ADD_FAILURE() << "did not finish: work proportional to declared sizes";
    return Status::Internal("timeout");
  }
  t.join();
  return done.get();
}

TEST(Flatten, HugeDeclaredSizesCostNothing) {
  TempDir dir;
  const std::string in = WriteCrafted(dir);
  auto src = Image::Open(in);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_LT((*src)->layers()[0].stats.file_bytes, 4096u);
  EXPECT_EQ((*src)->layers()[0].stats.zero_pages, kHuge / 4096);
  const std::string out = dir.File("flat.img");
  uint64_t calls = 0;
  Status s =
      Bounded([&] { return FlattenImage(in, out, {}, [&](uint64_t, uint64_t) { calls++; }); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_LE(calls, 4u);  // progress per data batch, not per declared byte
  EXPECT_TRUE(Bounded([&] { return VerifyImage(out); }).ok());
  auto got = Image::Open(out);
  ASSERT_TRUE(got.ok());
  for (uint32_t r = 0; r < 3; ++r) {
    std::vector<Image::SourceRun> a, b;
    ASSERT_TRUE((*src)->ClassifyRuns(r, 0, (*src)->regions()[r].length, &a).ok());
    ASSERT_TRUE((*got)->ClassifyRuns(r, 0, (*got)->regions()[r].length, &b).ok());
    ASSERT_EQ(a.size(), b.size()) << r;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].offset, b[i].offset);
      EXPECT_EQ(a[i].length, b[i].length);
      EXPECT_EQ(a[i].kind, b[i].kind);
    }
  }
  std::vector<char> page(4096);
  for (size_t i = 0; i < 16; ++i) {
    ASSERT_TRUE((*got)->Read(2, i * 4096, page.data(), 4096).ok());
    for (size_t k = 0; k < 4096; ++k) {
      ASSERT_EQ(page[k], static_cast<char>(1 + i + (i * 4096 + k) % 7)) << i;
    }
  }
}

TEST(Flatten, OutputThatIsALayerOfTheChainIsRefused) {
  TempDir dir;
  const std::string base = dir.File("base.img");
  {
    auto w = ImageWriter::Create(base);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddRegion(Reg(4 * 4096, 0)).ok());
    std::vector<char> data(4 * 4096, 7);
    ASSERT_TRUE((*w)->AddPages(0, 0, data.data(), data.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  const std::string top = dir.File("top.img");
  {
    ImageWriteOptions o;
    o.parent = base;
    auto w = ImageWriter::Create(top, o);
    ASSERT_TRUE(w.ok());
    std::vector<char> data(4096, 9);
    ASSERT_TRUE((*w)->AddPages(0, 4096, data.data(), data.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  ASSERT_EQ(link(base.c_str(), dir.File("hard.img").c_str()), 0);
  ASSERT_EQ(symlink(top.c_str(), dir.File("soft.img").c_str()), 0);
  for (const std::string& out : {base, top, dir.File("hard.img"), dir.File("soft.img")}) {
    Status s = FlattenImage(top, out);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << out << ": " << s.ToString();
  }
  // A layer written over its own parent chain is refused the same way.
  ImageWriteOptions o;
  o.parent = top;
  EXPECT_EQ(ImageWriter::Create(dir.File("hard.img"), o).status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(VerifyImage(top).ok());
  auto img = Image::Open(top);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ((*img)->layers().size(), 2u);
}

}  // namespace
}  // namespace pagewise
