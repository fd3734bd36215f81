// ChunkCache: hits, single-flight loads under concurrency, eviction within
// the budget, failed loads not cached, entries valid after eviction.
#include "image/chunk_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace pagewise::image {
namespace {

ChunkCache::Loader Filler(uint8_t byte, size_t len, std::atomic<int>* loads) {
  return [=](std::vector<uint8_t>* raw) {
    loads->fetch_add(1);
    raw->assign(len, byte);
    return Status::Ok();
  };
}

TEST(ChunkCache, LoadsOnceThenHits) {
  ChunkCache cache(1 << 20);
  std::atomic<int> loads{0};
  for (int i = 0; i < 5; ++i) {
    Result<ChunkCache::Data> d = cache.Get(0, 7, Filler(7, 4096, &loads));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ((*d)->size(), 4096u);
    EXPECT_EQ((**d)[100], 7);
  }
  EXPECT_EQ(loads.load(), 1);
  EXPECT_EQ(cache.counters().hits, 4u);
  // Same chunk number in another layer is another chunk.
  ASSERT_TRUE(cache.Get(1, 7, Filler(9, 4096, &loads)).ok());
  EXPECT_EQ(loads.load(), 2);
}

TEST(ChunkCache, ConcurrentReadersOfOneChunkLoadItOnce) {
  ChunkCache cache(64 << 20);
  std::atomic<int> loads{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t c = 0; c < 200; ++c) {
        const uint64_t chunk = (c * 7 + static_cast<uint64_t>(t)) % 50;
        Result<ChunkCache::Data> d =
            cache.Get(0, chunk, Filler(static_cast<uint8_t>(chunk), 8192, &loads));
        if (!d.ok() || (**d)[8191] != static_cast<uint8_t>(chunk)) bad++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(loads.load(), 50) << "each chunk is loaded exactly once";
}

TEST(ChunkCache, EvictsWithinBudgetAndKeepsHandedOutCopiesValid) {
  // 16 shards of 64 KiB: a few 16 KiB chunks per shard.
  ChunkCache cache(16 * 64 * 1024);
  std::atomic<int> loads{0};
  Result<ChunkCache::Data> first = cache.Get(0, 0, Filler(1, 16384, &loads));
  ASSERT_TRUE(first.ok());
  for (uint64_t c = 1; c < 1000; ++c) {
    ASSERT_TRUE(cache.Get(0, c, Filler(static_cast<uint8_t>(c), 16384, &loads)).ok());
  }
  const ChunkCache::Counters k = cache.counters();
  EXPECT_LE(k.bytes, 16u * 64 * 1024);
  EXPECT_GT(k.evictions, 0u);
  // The first chunk was evicted long ago, but our copy is intact.
  EXPECT_EQ((*first)->size(), 16384u);
  EXPECT_EQ((**first)[0], 1);
}

TEST(ChunkCache, FailedLoadIsNotCached) {
  ChunkCache cache(1 << 20);
  int calls = 0;
  auto failing = [&](std::vector<uint8_t>*) {
    ++calls;
    return Status::Corruption("chunk damaged");
  };
  Result<ChunkCache::Data> d = cache.Get(0, 3, failing);
  EXPECT_EQ(d.status().code(), Code::kCorruption);
  d = cache.Get(0, 3, failing);
  EXPECT_FALSE(d.ok());
  EXPECT_EQ(calls, 2);
  std::atomic<int> loads{0};
  EXPECT_TRUE(cache.Get(0, 3, Filler(3, 4096, &loads)).ok());
  EXPECT_EQ(loads.load(), 1);
}

}  // namespace
}  // namespace pagewise::image
