// Demand first, against a real S3 server: a demand read, and a lazy
// restore's demand fault, are fetched ahead of the prefetch and background
// fetches queued before them, while a background read waits its turn (the
// control). The chunk store under test has one thread for prefetch and
// background fetches and one for demand reads (connections = 3), so the
// queued work drains one chunk at a time and the order is visible in the
// store's fetch count.
#include <sys/mman.h>

#include <cstdio>
#include <cstring>

#include "pagewise/remote.h"
#include "pagewise/restore.h"
#include "remote/chunk_store.h"
#include "restore/restore_testing.h"
#include "s3_test_support.h"

namespace pagewise::testing {
namespace {

class S3OrderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client_ = RgwClient();
    bucket_ = NewBucket(*client_);
  }
  // `pages` pages, none of them zero, pushed as `name` in chunks of
  // kDenseChunk: chunk c then holds the pages at flat bytes
  // [c * kDenseChunk, (c + 1) * kDenseChunk), each chunk its own object.
  static constexpr uint32_t kDenseChunk = 16 * 1024;
  std::vector<char> PushedDense(const std::string& name, size_t pages, uint64_t seed) {
    std::vector<char> mem(pages * Ps());
    for (size_t i = 0; i < pages; ++i) FillPage(mem.data() + i * Ps(), seed, i);
    const std::string path = dir_.File(name + ".img");
    EXPECT_TRUE(WriteFlatImage(path, mem.data(), mem.size(), "", nullptr, kDenseChunk).ok());
    Result<PushStats> p = PushImage(path, Url(name));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (p.ok()) {
      EXPECT_EQ(p->chunks, mem.size() / kDenseChunk);
    }
    return mem;
  }
  std::string Url(const std::string& name) const { return "s3://" + bucket_ + "/" + name; }
  // Opens `name` with a chunk cache of its own and a store of `connections`
  // threads (0: the default), as a page source; src null after a failed
  // expectation.
  struct Opened {
    std::shared_ptr<PageSource> src;
    std::shared_ptr<remote::ChunkStore> store;
  };
  Opened Open(const std::string& name, int connections) {
    ImageOpenOptions io;
    io.remote.cache_dir = caches_.File(name);
    if (connections > 0) io.remote.connections = connections;
    Result<std::unique_ptr<Image>> img = Image::Open(Url(name), io);
    EXPECT_TRUE(img.ok()) << img.status().ToString();
    if (!img.ok()) return {};
    return {ImageSource(std::move(*img)), remote::ChunkStore::Shared(io.remote).value()};
  }

  TempDir dir_;
  TempDir caches_;  // chunk caches of Open(), one per image
  CacheDir cache_;
  std::shared_ptr<remote::S3Client> client_;
  std::string bucket_;
};

// Demand first (the store with one thread for prefetch and background
// fetches and one for demand reads): with almost every chunk of the image
// queued as background work, a demand read is fetched ahead of the queue,
// while a background read waits its turn behind all of it (the control:
// the count tells the two orders apart).
TEST_F(S3OrderTest, DemandReadOvertakesQueuedBackgroundFetches) {
  constexpr uint64_t kSeed = 70;
  const std::vector<char> mem = PushedDense("order", 1024, kSeed);
  const auto [src, store] = Open("order", 3);
  ASSERT_NE(src, nullptr);
  const uint64_t chunks = mem.size() / kDenseChunk;
  std::vector<uint64_t> offsets;
  for (uint64_t c = 0; c + 2 < chunks; ++c) offsets.push_back(c * kDenseChunk);
  const uint64_t queued = offsets.size();
  const uint64_t before = store->stats().fetched;
  src->WillNeed(offsets, ReadPriority::kBackground);
  std::vector<char> page(Ps());
  const uint64_t last = chunks - 1, next_to_last = chunks - 2;
  ASSERT_TRUE(
      src->ReadWithPriority(last * kDenseChunk, page.data(), Ps(), ReadPriority::kDemand).ok());
  const uint64_t at_demand = store->stats().fetched - before;
  EXPECT_TRUE(PageMatches(page.data(), kSeed, last * kDenseChunk / Ps()));
  EXPECT_LT(at_demand, queued) << "the demand read waited for the whole background queue";
  ASSERT_TRUE(src->ReadWithPriority(next_to_last * kDenseChunk, page.data(), Ps(),
                                    ReadPriority::kBackground)
                  .ok());
  EXPECT_TRUE(PageMatches(page.data(), kSeed, next_to_last * kDenseChunk / Ps()));
  EXPECT_EQ(store->stats().fetched - before, queued + 2)
      << "a background read comes after the background reads queued before it";
  std::printf("demand read done after %llu of %llu queued background fetches\n",
              static_cast<unsigned long long>(at_demand - 1),
              static_cast<unsigned long long>(queued));
}

// A sequential stream hints the stretch ahead of it once: each read adds
// the pages its window moved by, not the whole window again (which made
// hinting cost more CPU than the reads in bench remote's warm restores).
TEST_F(S3OrderTest, SequentialStreamHintsEachChunkAheadOnce) {
  constexpr uint64_t kSeed = 71;
  const std::vector<char> mem = PushedDense("stream", 1024, kSeed);
  const auto [src, store] = Open("stream", 0);
  ASSERT_NE(src, nullptr);
  const uint64_t chunks = mem.size() / kDenseChunk;
  const uint64_t before = store->stats().hinted;
  std::vector<char> buf(kDenseChunk);
  for (uint64_t c = 0; c < chunks; ++c) {  // fill-sized reads, one chunk each
    ASSERT_TRUE(
        src->ReadWithPriority(c * kDenseChunk, buf.data(), buf.size(), ReadPriority::kBackground)
            .ok());
    ASSERT_EQ(std::memcmp(buf.data(), mem.data() + c * kDenseChunk, buf.size()), 0) << c;
  }
  const uint64_t hinted = store->stats().hinted - before;
  // Every chunk ahead of the stream once (the first window whole); the
  // window hinted again per read would be about chunks * chunks / 2.
  EXPECT_GT(hinted, chunks / 2);
  EXPECT_LE(hinted, chunks + 8) << "chunks hinted again and again";
}

// The same through a lazy restore: a prefetch list covering the image is
// queued when the restore starts; a fault on the last page is served ahead
// of it.
TEST_F(S3OrderTest, DemandFaultIsServedAheadOfTheQueuedPrefetch) {
  constexpr uint64_t kSeed = 71;
  const std::vector<char> want = PushedDense("prefetch", 1024, kSeed);
  const auto [src, store] = Open("prefetch", 3);
  ASSERT_NE(src, nullptr);
  const uint64_t chunks = want.size() / kDenseChunk;
  RestoreOptions o;
  o.fill.background_fill = false;
  o.fill.wait_for_prefetch = false;
  o.release_when_resident = false;
  for (uint64_t off = 0; off < (chunks - 1) * kDenseChunk; off += Ps()) {
    o.fill.prefetch.push_back(off);
  }
  const uint64_t before = store->stats().fetched;
  auto r = StartReleased(src, want.size(), o);
  ASSERT_NE(r, nullptr);
  char* mem = r->data(0);
  const size_t pages = want.size() / Ps();
  EXPECT_TRUE(PageMatches(mem + (pages - 1) * Ps(), kSeed, pages - 1));  // the demand fault
  const uint64_t at_fault = store->stats().fetched - before;
  EXPECT_LT(at_fault, chunks - 1) << "the fault waited for the whole prefetch list";
  ASSERT_TRUE(r->Finish().ok());  // the filler brings in the rest
  EXPECT_EQ(std::memcmp(mem, want.data(), want.size()), 0);
  std::printf("fault served after %llu of %llu prefetched chunks\n",
              static_cast<unsigned long long>(at_fault - 1),
              static_cast<unsigned long long>(chunks - 1));
  munmap(mem, want.size());
}

}  // namespace
}  // namespace pagewise::testing
