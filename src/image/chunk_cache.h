// ChunkCache: the decompressed data chunks of one opened image, shared by
// every thread that reads it (a page server's clients, a restore's filler
// and fault threads), least recently used evicted within a byte budget.
//
// Why shared: with dedup, pages in address order refer to chunks in
// first-occurrence order, so a sequential read of memory full of duplicate
// pages keeps coming back to the few chunks holding the duplicated
// content; and many restores of one image read the same chunks. A cache
// per thread decompressed each chunk once per thread (32 clients: 32 times
// the work and the memory).
//
// A chunk is loaded (read, checked, decompressed) by one thread, outside
// every lock; others asking for the same chunk meanwhile wait for that load
// instead of repeating it. A failed load is not cached: the next request
// tries again. Entries are reference counted, so a reader keeps its copy
// valid while it copies out of it even if the entry is evicted meanwhile.
//
// Thread safety: every method is safe from any number of threads.
#ifndef PAGEWISE_IMAGE_CHUNK_CACHE_H_
#define PAGEWISE_IMAGE_CHUNK_CACHE_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::image {

class ChunkCache {
 public:
  using Data = std::shared_ptr<const std::vector<uint8_t>>;
  // Reads chunk data into *raw (the decompressed, checked bytes).
  using Loader = std::function<Status(std::vector<uint8_t>* raw)>;

  static constexpr size_t kDefaultBudgetBytes = 32u << 20;

  explicit ChunkCache(size_t budget_bytes = kDefaultBudgetBytes);
  ChunkCache(const ChunkCache&) = delete;
  ChunkCache& operator=(const ChunkCache&) = delete;

  // Chunk `chunk` of layer `layer`: from the cache, or loaded with `load`
  // (the loader's error is returned and nothing is cached).
  Result<Data> Get(uint32_t layer, uint64_t chunk, const Loader& load);

  struct Counters {
    uint64_t hits = 0, misses = 0, waits = 0, evictions = 0;
    size_t bytes = 0;
  };
  Counters counters() const;

 private:
  static constexpr size_t kShards = 16;
  struct Entry {
    Data data;             // null while loading
    bool loading = false;  // one thread is loading it
    std::list<uint64_t>::iterator lru;
  };
  struct Shard {
    std::mutex mu;
    std::condition_variable loaded;
    std::unordered_map<uint64_t, Entry> entries;
    std::list<uint64_t> lru;  // most recent first; only loaded entries
    size_t bytes = 0;
    Counters counters;
  };
  static uint64_t Key(uint32_t layer, uint64_t chunk) {
    return (static_cast<uint64_t>(layer) << 48) ^ chunk;
  }
  Shard& ShardOf(uint64_t key) { return shards_[(key * 0x9e3779b97f4a7c15ull) >> 60]; }
  void EvictLocked(Shard& sh);

  size_t shard_budget_;
  mutable Shard shards_[kShards];
};

}  // namespace pagewise::image

#endif  // PAGEWISE_IMAGE_CHUNK_CACHE_H_
