// ChunkCache: sharded LRU with single-flight loads.
#include "image/chunk_cache.h"

#include <algorithm>
#include <utility>

namespace pagewise::image {

ChunkCache::ChunkCache(size_t budget_bytes)
    : shard_budget_(std::max<size_t>(1, budget_bytes / kShards)) {}

void ChunkCache::EvictLocked(Shard& sh) {
  // Keep at least the newest entry, whatever its size.
  while (sh.bytes > shard_budget_ && sh.lru.size() > 1) {
    const uint64_t key = sh.lru.back();
    sh.lru.pop_back();
    auto it = sh.entries.find(key);
    sh.bytes -= it->second.data->size();
    sh.entries.erase(it);
    sh.counters.evictions++;
  }
}

Result<ChunkCache::Data> ChunkCache::Get(uint32_t layer, uint64_t chunk, const Loader& load) {
  const uint64_t key = Key(layer, chunk);
  Shard& sh = ShardOf(key);
  {
    std::unique_lock<std::mutex> lk(sh.mu);
    for (;;) {
      auto it = sh.entries.find(key);
      if (it == sh.entries.end()) break;
      if (!it->second.loading) {
        sh.counters.hits++;
        sh.lru.splice(sh.lru.begin(), sh.lru, it->second.lru);
        return it->second.data;
      }
      // Another thread loads it: wait for that rather than load it twice.
      sh.counters.waits++;
      sh.loaded.wait(lk);
    }
    sh.counters.misses++;
    Entry e;
    e.loading = true;
    sh.entries.emplace(key, std::move(e));
  }
  auto raw = std::make_shared<std::vector<uint8_t>>();
  Status st = load(raw.get());
  std::lock_guard<std::mutex> lk(sh.mu);
  auto it = sh.entries.find(key);
  if (!st.ok()) {
    sh.entries.erase(it);  // not cached: the next request tries again
    sh.loaded.notify_all();
    return st;
  }
  Data data = std::move(raw);
  it->second.data = data;
  it->second.loading = false;
  sh.lru.push_front(key);
  it->second.lru = sh.lru.begin();
  sh.bytes += data->size();
  EvictLocked(sh);
  sh.loaded.notify_all();
  return data;
}

ChunkCache::Counters ChunkCache::counters() const {
  Counters out;
  for (Shard& sh : shards_) {
    std::lock_guard<std::mutex> lk(sh.mu);
    out.hits += sh.counters.hits;
    out.misses += sh.counters.misses;
    out.waits += sh.counters.waits;
    out.evictions += sh.counters.evictions;
    out.bytes += sh.bytes;
  }
  return out;
}

}  // namespace pagewise::image
