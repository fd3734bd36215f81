// The image writer's pipeline (helper threads): pages added from one or
// several threads come back exactly, a page added twice keeps its later
// content even when its batches run on different helpers, zero pages
// override earlier data, and a write error on a helper fails the image.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "image/image_env.h"
#include "pagewise/image.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::FaultEnv;
using testing::FillPage;
using testing::Op;
using testing::TempDir;

constexpr uint32_t kPs = 4096;

Region MakeRegion(uint64_t len) {
  Region r;
  r.length = len;
  r.page_size = kPs;
  r.name = "m";
  return r;
}

std::unique_ptr<ImageWriter> NewWriter(const std::string& path, int threads, Env* env = nullptr) {
  ImageWriteOptions opt;
  opt.threads = threads;
  opt.chunk_bytes = 16 * kPs;
  Result<std::unique_ptr<ImageWriter>> w =
      env != nullptr ? CreateImageWriter(path, opt, env) : ImageWriter::Create(path, opt);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  return w.ok() ? std::move(w).value() : nullptr;
}

std::vector<char> ReadAll(const std::string& path, size_t len) {
  std::vector<char> back(len, 1);
  Result<std::unique_ptr<Image>> img = Image::Open(path);
  EXPECT_TRUE(img.ok()) << img.status().ToString();
  if (!img.ok()) return back;
  EXPECT_TRUE((*img)->Verify().ok());
  EXPECT_TRUE((*img)->Read(0, 0, back.data(), len).ok());
  return back;
}

class WriterPipeline : public ::testing::TestWithParam<int> {};

// Many rounds over the same pages, each in several AddPages calls of a few
// batches: the last round's content must win everywhere.
TEST_P(WriterPipeline, LaterContentWinsAcrossBatches) {
  TempDir dir;
  constexpr size_t kN = 1024;
  std::unique_ptr<ImageWriter> w = NewWriter(dir.File("a.img"), GetParam());
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->AddRegion(MakeRegion(kN * kPs)).ok());
  std::vector<char> mem(kN * kPs);
  for (int round = 0; round < 6; ++round) {
    for (size_t i = 0; i < kN; ++i) {
      if ((i + round) % 7 == 0) {
        std::memset(mem.data() + i * kPs, 0, kPs);  // zero in this round
      } else {
        FillPage(mem.data() + i * kPs, 100 + round, i % 300);  // with duplicates
      }
    }
    for (size_t off = 0; off < mem.size(); off += 200 * kPs) {
      const size_t len = std::min<size_t>(200 * kPs, mem.size() - off);
      ASSERT_TRUE(w->AddPages(0, off, mem.data() + off, len).ok());
    }
    // The caller may reuse its buffer at once: scribble over it.
    if (round < 5) std::memset(mem.data(), 0x77, mem.size());
  }
  ASSERT_TRUE(w->Commit().ok());
  EXPECT_EQ(ReadAll(dir.File("a.img"), mem.size()), mem);
}

TEST_P(WriterPipeline, ZeroPagesOverrideEarlierData) {
  TempDir dir;
  constexpr size_t kN = 512;
  std::unique_ptr<ImageWriter> w = NewWriter(dir.File("z.img"), GetParam());
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->AddRegion(MakeRegion(kN * kPs)).ok());
  std::vector<char> mem(kN * kPs);
  for (size_t i = 0; i < kN; ++i) FillPage(mem.data() + i * kPs, 5, i);
  ASSERT_TRUE(w->AddPages(0, 0, mem.data(), mem.size()).ok());
  ASSERT_TRUE(w->AddZeroPages(0, 100 * kPs, 300 * kPs).ok());
  std::memset(mem.data() + 100 * kPs, 0, 300 * kPs);
  ASSERT_TRUE(w->Commit().ok());
  EXPECT_EQ(ReadAll(dir.File("z.img"), mem.size()), mem);
}

// Four threads add interleaved stripes through a writer with helpers.
TEST_P(WriterPipeline, SeveralCallerThreads) {
  TempDir dir;
  constexpr size_t kN = 2048;
  std::unique_ptr<ImageWriter> w = NewWriter(dir.File("c.img"), GetParam());
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->AddRegion(MakeRegion(kN * kPs)).ok());
  std::vector<char> mem(kN * kPs);
  for (size_t i = 0; i < kN; ++i) FillPage(mem.data() + i * kPs, 9, i % 500);
  std::vector<std::thread> threads;
  std::vector<Status> results(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t p = t * 64; p < kN && results[t].ok(); p += 4 * 64) {
        results[t] = w->AddPages(0, p * kPs, mem.data() + p * kPs, 64 * kPs);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (const Status& s : results) ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(w->Commit().ok());
  EXPECT_EQ(w->stats().stored_pages, 500u);
  EXPECT_EQ(ReadAll(dir.File("c.img"), mem.size()), mem);
}

// A write error on a helper thread: AddPages may already have returned OK,
// but the error comes back from a later call or Commit, which refuses and
// leaves no file.
TEST_P(WriterPipeline, HelperWriteErrorFailsTheImage) {
  TempDir dir;
  FaultEnv env;
  constexpr size_t kN = 256;
  std::unique_ptr<ImageWriter> w = NewWriter(dir.File("e.img"), GetParam(), &env);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->AddRegion(MakeRegion(kN * kPs)).ok());
  std::vector<char> mem(kN * kPs);
  for (size_t i = 0; i < kN; ++i) FillPage(mem.data() + i * kPs, 3, i);
  env.Inject(Op::kPwrite, {ENOSPC, 0, 2, 1});
  Status first;
  for (size_t p = 0; p < kN && first.ok(); p += 16) {
    first = w->AddPages(0, p * kPs, mem.data() + p * kPs, 16 * kPs);
  }
  EXPECT_TRUE(first.ok() || first.code() == Code::kNoSpace) << first.ToString();
  EXPECT_EQ(w->Commit().code(), Code::kNoSpace);
  EXPECT_EQ(env.Fired(Op::kPwrite), 1);
  EXPECT_FALSE(std::filesystem::exists(dir.File("e.img")));
}

INSTANTIATE_TEST_SUITE_P(Threads, WriterPipeline, ::testing::Values(1, 2, 4),
                         [](const auto& info) { return std::to_string(info.param) + "threads"; });

}  // namespace
}  // namespace pagewise
