// DiskCache: the host's chunk cache, a directory shared by every pagewise
// process that names it.
//
// Layout (docs/image-format.md, "Local chunk cache"):
//   DIR/v1/c/XX/KEY   one complete entry per chunk: exactly its stored bytes
//   DIR/v1/tmp/       entries being written (renamed into c/ when complete)
//   DIR/v1/lock       byte-range locks: one byte per key (who fetches it),
//                     byte 0 for eviction
// Entries appear only by rename(2) of a fully written temporary file, so a
// reader sees a complete entry or none. They are not fsynced: the cache is
// a cache, and every read checks the entry against the checksum its caller
// knows (the manifest's), deleting a damaged entry so that it is fetched
// again. Temporary files left by a killed process are removed when a cache
// is opened (after ten minutes).
//
// Size bound: after a Put, a process whose running total passes the bound
// takes the eviction lock (or leaves it to whoever holds it), lists the
// entries and deletes the least recently used (by modification time, which a
// hit refreshes once a minute) down to 80 % of the bound. The total is
// re-counted from the directory at each eviction and every 256 MiB written,
// so entries other processes add are counted then; the bound can be
// exceeded by what other processes add between two counts.
//
// Thread safety: every method is safe from any number of threads and
// processes.
#ifndef PAGEWISE_REMOTE_DISK_CACHE_H_
#define PAGEWISE_REMOTE_DISK_CACHE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "pagewise/status.h"
#include "sys/env.h"

namespace pagewise::remote {

class DiskCache {
 public:
  // Opens (creating as needed, mode 0700) the cache at `dir`. Errors: the
  // directory cannot be created or is not writable.
  static Result<std::shared_ptr<DiskCache>> Open(const std::string& dir, uint64_t max_bytes,
                                                 Env* env = nullptr);
  ~DiskCache();
  DiskCache(const DiskCache&) = delete;
  DiskCache& operator=(const DiskCache&) = delete;

  // Copies entry `key` into dst if it holds exactly `len` bytes whose
  // XXH3-64 is `checksum`: true. No entry: false. A damaged entry (other
  // size or checksum) is deleted: false with *damaged = true. Keys are
  // [A-Za-z0-9-] only.
  Result<bool> Get(const std::string& key, uint8_t* dst, size_t len, uint64_t checksum,
                   bool* damaged);
  // Stores `len` bytes as entry `key` (replacing any), then keeps the bound.
  Status Put(const std::string& key, const uint8_t* data, size_t len);

  // Cross-process claim on fetching `key`: true if this process may fetch
  // it now (until Release); false while another process holds the claim.
  // Claims die with their process.
  Result<bool> TryClaim(const std::string& key);
  void Release(const std::string& key);

  // Deletes least recently used entries until at most `target` bytes stay.
  Status EvictTo(uint64_t target);
  // Bytes of entries as last counted plus this process's Puts since.
  uint64_t approx_bytes() const { return bytes_.load(); }
  const std::string& dir() const { return dir_; }
  std::string EntryPath(const std::string& key) const;

  struct Stats {
    uint64_t hits = 0, misses = 0, damaged = 0, puts = 0, evicted = 0;
  };
  Stats stats() const;

 private:
  DiskCache(Env* env, std::string dir, uint64_t max_bytes)
      : env_(env), dir_(std::move(dir)), max_bytes_(max_bytes) {}
  Status Recount();
  uint64_t LockOffset(const std::string& key) const;

  Env* env_;
  std::string dir_;  // DIR/v1
  uint64_t max_bytes_;
  int lock_fd_ = -1;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<bool> counted_{false};
  std::atomic<uint64_t> written_since_count_{0};
  std::mutex evict_mu_;
  std::atomic<uint64_t> hits_{0}, misses_{0}, damaged_{0}, puts_{0}, evicted_{0};
};

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_DISK_CACHE_H_
