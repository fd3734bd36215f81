// ChunkStore: how a process gets the verified bytes of remote chunks. One
// store per cache configuration, shared by every remote image the process
// opens (ChunkStore::Shared), so a chunk is fetched once however many
// images or readers want it.
//
// A read looks, in order, in
//   1. the memory tier: verified chunks of this process, LRU, bounded;
//   2. a fetch in flight in this process (single flight: it waits for it);
//   3. the disk cache (DiskCache), checked against the chunk's checksum;
//   4. the network: under a cross-process claim on the chunk (another
//      process fetching the same chunk is waited for, its entry then read),
//      with retries until the per-object timeout; SHA-256 verified (for
//      content-addressed chunks) or XXH3 (for ranges of an image file)
//      before it is used or cached. Bytes that fail their hash are never
//      returned and never cached.
// Fetches (steps 3 and 4) run on the store's own threads: a read waits for
// its chunk's fetch, hinted chunks (Hint) are fetched ahead of need, demand
// ahead of prefetch ahead of background, over the HttpEngine's parallel
// connections. Some threads take demand reads only, so a demand read never
// waits behind queued prefetch or background fetches. A failed fetch is not
// remembered: the next read tries again.
//
// Descriptors: the store opens, uses and closes its descriptors (cache
// entries, the lock file; the HttpEngine's sockets) only on its own
// threads, which Create starts on the calling thread and which therefore
// share that thread's fd table. A lazy restore's engine threads, which read
// and hint, run in a private copy of the table (restore/engine.h, "File
// descriptors"): a thread started there would keep that copy, and every
// descriptor open when the restore started, alive as long as the store;
// and a cache entry opened there would get a number that may name another
// descriptor in the process's table at the same time (harmless to the
// kernel, but tools that track descriptors by number, like TSan, then see
// one descriptor used by two threads without synchronisation).
//
// Thread safety: every method is safe from any number of threads. Create
// (and Shared, which may create) must be called on a thread that shares
// the process's fd table (not from a restore engine's callbacks).
#ifndef PAGEWISE_REMOTE_CHUNK_STORE_H_
#define PAGEWISE_REMOTE_CHUNK_STORE_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pagewise/remote_options.h"
#include "pagewise/restore.h"
#include "remote/crypto.h"
#include "remote/disk_cache.h"
#include "remote/http.h"
#include "remote/s3_client.h"

namespace pagewise::remote {

// Where one chunk's stored bytes are and how to check them.
struct ChunkLocation {
  std::string cache_key;  // "s3-<sha256>" or "h-<uuid>-<id>": [A-Za-z0-9-]
  uint32_t length = 0;    // stored bytes
  uint64_t checksum = 0;  // XXH3-64 of them (the index's stored_checksum)
  bool has_sha256 = false;
  Sha256Digest sha256{};
  // An S3 object (s3 != null) or a byte range of an http(s) URL.
  std::shared_ptr<const S3Client> s3;
  std::string bucket, key;
  std::string url;
  uint64_t offset = 0;
};

class ChunkStore {
 public:
  struct Options {
    std::string cache_dir;  // "": no disk cache
    uint64_t cache_bytes = 10ull << 30;
    uint64_t memory_bytes = 64ull << 20;
    int connections = 8;
    std::chrono::nanoseconds timeout = std::chrono::seconds(30);
    std::chrono::nanoseconds connect_timeout = std::chrono::seconds(5);
    bool cache_reads = true;  // false: always fetch (and re-cache)
  };
  // The process's store for these options (created on first use, kept
  // while any image uses it). `remote` supplies the defaults it leaves open.
  static Result<std::shared_ptr<ChunkStore>> Shared(const RemoteOptions& remote);
  static Result<std::shared_ptr<ChunkStore>> Shared(const Options& options);
  // The store options `remote` asks for (defaults from the environment).
  static Options OptionsFor(const RemoteOptions& remote);
  static Result<std::shared_ptr<ChunkStore>> Create(const Options& options);
  ~ChunkStore();
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  const std::shared_ptr<HttpEngine>& http() const { return http_; }
  const Options& options() const { return opt_; }
  std::chrono::nanoseconds timeout() const { return opt_.timeout; }

  // Copies the loc.length verified bytes of the chunk into dst. Errors name
  // the object and the cause (missing: kNotFound; hash mismatch:
  // kCorruption; unreachable past the timeout: kTimeout).
  Status Read(const ChunkLocation& loc, uint8_t* dst, ReadPriority priority);
  // Starts fetching these chunks (skipping any in memory or in flight;
  // raising the priority of queued ones).
  void Hint(std::vector<ChunkLocation> locs, ReadPriority priority);

  struct Stats {
    uint64_t memory_hits = 0;
    uint64_t joined = 0;  // reads that waited for a fetch in flight
    uint64_t disk_hits = 0;
    uint64_t fetched = 0;  // chunks fetched over the network
    uint64_t fetched_bytes = 0;
    uint64_t waited_for_peer = 0;  // fetches another process did for us
    uint64_t damaged_cache = 0;    // cache entries that failed their checksum
    uint64_t bad_objects = 0;      // fetched bytes that failed their hash
    uint64_t hinted = 0;           // chunk locations passed to Hint
  };
  Stats stats() const;
  DiskCache* disk() const { return disk_.get(); }
  // Empties the memory tier (benchmarks: a cold process with a warm disk).
  void DropMemory();

 private:
  enum class State { kQueued, kRunning, kDone };
  struct Flight {
    ChunkLocation loc;
    ReadPriority priority = ReadPriority::kBackground;
    State state = State::kQueued;
    Status result;
    std::shared_ptr<const std::vector<uint8_t>> data;
    std::condition_variable cv;
  };
  using FlightPtr = std::shared_ptr<Flight>;

  explicit ChunkStore(Options options) : opt_(std::move(options)) {}
  // Gets the bytes of flight `f` (memory miss, not in flight elsewhere) from
  // disk or network. No lock held.
  Status Fetch(const ChunkLocation& loc, std::vector<uint8_t>* out, ReadPriority priority);
  Status FetchNetwork(const ChunkLocation& loc, std::vector<uint8_t>* out, ReadPriority priority,
                      Deadline deadline);
  // Publishes the result of `f` (erasing it from flights_), under mu_.
  void FinishLocked(const FlightPtr& f, Status st, std::vector<uint8_t>&& bytes);
  std::shared_ptr<const std::vector<uint8_t>> MemoryGetLocked(const std::string& key);
  void MemoryPutLocked(const std::string& key, std::shared_ptr<const std::vector<uint8_t>> v);
  // Fetches queued flights, highest priority first; `demand_only` threads
  // take demand flights only.
  void WorkerLoop(bool demand_only);

  Options opt_;
  std::shared_ptr<HttpEngine> http_;
  std::shared_ptr<DiskCache> disk_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  bool stop_ = false;
  std::atomic<bool> cancel_{false};
  std::unordered_map<std::string, FlightPtr> flights_;
  std::deque<FlightPtr> queues_[3];
  std::vector<std::thread> workers_;  // started by Create
  // Memory tier: LRU list of keys, most recent first.
  std::list<std::string> lru_;
  struct MemEntry {
    std::shared_ptr<const std::vector<uint8_t>> data;
    std::list<std::string>::iterator pos;
  };
  std::unordered_map<std::string, MemEntry> memory_;
  uint64_t memory_used_ = 0;
  Stats stats_;
};

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_CHUNK_STORE_H_
