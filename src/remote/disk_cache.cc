// DiskCache: entries by rename, checked reads, OFD-lock claims, LRU eviction.
#include "remote/disk_cache.h"

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "image/format.h"
#include "sys/fs.h"

namespace pagewise::remote {
namespace {

constexpr int64_t kTouchAfterNs = 60'000'000'000;      // refresh LRU time at most once a minute
constexpr int64_t kStaleTempNs = 600'000'000'000;      // abandoned temporary files
constexpr uint64_t kRecountEveryBytes = 256ull << 20;  // re-count the directory this often

// The fan-out subdirectory of a key: its checksum's low byte, in hex.
std::string Hex2(uint64_t v) {
  const auto low = static_cast<unsigned char>(v);
  return HexBytes(&low, 1);
}

bool ValidKey(const std::string& key) {
  if (key.empty() || key.size() > 200) return false;
  for (char c : key) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
  }
  return true;
}

}  // namespace

Result<std::shared_ptr<DiskCache>> DiskCache::Open(const std::string& dir, uint64_t max_bytes,
                                                   Env* env) {
  if (env == nullptr) env = Env::Default();
  std::shared_ptr<DiskCache> c(new DiskCache(env, dir + "/v1", max_bytes));
  Status s = sys::MakeDirs(c->dir_ + "/tmp", 0700);
  if (s.ok()) s = sys::MakeDirs(c->dir_ + "/c", 0700);
  if (!s.ok()) return s.WithContext("chunk cache " + dir + " (set PAGEWISE_CACHE_DIR)");
  PW_ASSIGN_OR_RETURN(c->lock_fd_, env->Open(c->dir_ + "/lock", O_RDWR | O_CREAT, 0600));
  // Temporary files of writers that died long ago.
  Result<std::vector<sys::DirEntry>> tmp = sys::ListDir(c->dir_ + "/tmp");
  if (tmp.ok()) {
    const int64_t now = WallClockNs();
    for (const sys::DirEntry& e : *tmp) {
      if (now - e.mtime_ns > kStaleTempNs) {
        env->Unlink(c->dir_ + "/tmp/" + e.name).IgnoreError();  // another opener may race us
      }
    }
  }
  return c;
}

DiskCache::~DiskCache() {
  if (lock_fd_ >= 0) env_->Close(lock_fd_).IgnoreError();  // releases our claims
}

std::string DiskCache::EntryPath(const std::string& key) const {
  return dir_ + "/c/" + Hex2(image::Checksum64(key.data(), key.size())) + "/" + key;
}

uint64_t DiskCache::LockOffset(const std::string& key) const {
  // Byte 0 is the eviction lock; keys spread over [1, 2^62].
  return 1 + (image::Checksum64(key.data(), key.size()) >> 2);
}

Result<bool> DiskCache::Get(const std::string& key, uint8_t* dst, size_t len, uint64_t checksum,
                            bool* damaged) {
  *damaged = false;
  if (!ValidKey(key)) return Status::InvalidArgument("chunk cache key '" + key + "'");
  const std::string path = EntryPath(key);
  Result<int> fd = env_->Open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (!fd.ok()) {
    misses_++;
    if (fd.status().code() == Code::kNotFound) return false;
    return fd.status().WithContext("chunk cache");
  }
  Result<sys::FileInfo> info = sys::StatFd(*fd);
  Status s = info.ok() ? Status::Ok() : info.status();
  bool good = false;
  if (s.ok() && info->regular && info->size == len) {
    s = ReadFully(env_, *fd, dst, len, 0);
    good = s.ok() && image::Checksum64(dst, len) == checksum;
    if (good && WallClockNs() - info->mtime_ns > kTouchAfterNs) {
      sys::TouchFd(*fd).IgnoreError();  // LRU recency is advisory
    }
  }
  env_->Close(*fd).IgnoreError();  // read-only
  if (good) {
    hits_++;
    return true;
  }
  // Damaged (torn by a crash, truncated, overwritten): drop it; the caller
  // fetches the chunk again and stores a good copy.
  damaged_++;
  misses_++;
  *damaged = true;
  env_->Unlink(path).IgnoreError();  // someone may have replaced or removed it already
  return false;
}

Status DiskCache::Put(const std::string& key, const uint8_t* data, size_t len) {
  if (!ValidKey(key)) return Status::InvalidArgument("chunk cache key '" + key + "'");
  const std::string final_path = EntryPath(key);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string tmp = dir_ + "/tmp/" + key + "." + std::to_string(rng());
  PW_RETURN_IF_ERROR(sys::MakeDirs(final_path.substr(0, final_path.rfind('/')), 0700));
  PW_ASSIGN_OR_RETURN(int fd,
                      env_->Open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  Status s = WriteFully(env_, fd, data, len, 0);
  Status cl = env_->Close(fd);
  if (s.ok()) s = cl;
  if (s.ok()) s = env_->Rename(tmp, final_path);
  if (!s.ok()) {
    env_->Unlink(tmp).IgnoreError();  // the write's error is what matters
    return s.WithContext("chunk cache " + dir_);
  }
  puts_++;
  bytes_ += len;
  written_since_count_ += len;
  if (!counted_.load() || written_since_count_.load() >= kRecountEveryBytes) {
    PW_RETURN_IF_ERROR(Recount());
  }
  if (bytes_.load() > max_bytes_) PW_RETURN_IF_ERROR(EvictTo(max_bytes_ / 10 * 8));
  return Status::Ok();
}

Status DiskCache::Recount() {
  uint64_t total = 0;
  for (int i = 0; i < 256; ++i) {
    Result<std::vector<sys::DirEntry>> es = sys::ListDir(dir_ + "/c/" + Hex2(i));
    if (!es.ok()) continue;  // not created yet
    for (const sys::DirEntry& e : *es) total += e.regular ? e.size : 0;
  }
  bytes_ = total;
  written_since_count_ = 0;
  counted_ = true;
  return Status::Ok();
}

Status DiskCache::EvictTo(uint64_t target) {
  std::unique_lock<std::mutex> lk(evict_mu_, std::try_to_lock);
  if (!lk.owns_lock()) return Status::Ok();  // this process is evicting already
  PW_ASSIGN_OR_RETURN(bool mine, sys::TryLockRange(lock_fd_, 0, 1));
  if (!mine) return Status::Ok();  // another process is evicting
  struct Entry {
    std::string path;
    uint64_t size;
    int64_t mtime;
  };
  std::vector<Entry> all;
  uint64_t total = 0;
  for (int i = 0; i < 256; ++i) {
    const std::string sub = dir_ + "/c/" + Hex2(i);
    Result<std::vector<sys::DirEntry>> es = sys::ListDir(sub);
    if (!es.ok()) continue;
    for (const sys::DirEntry& e : *es) {
      if (!e.regular) continue;
      all.push_back({sub + "/" + e.name, e.size, e.mtime_ns});
      total += e.size;
    }
  }
  std::sort(all.begin(), all.end(),
            [](const Entry& a, const Entry& b) { return a.mtime < b.mtime; });
  for (const Entry& e : all) {
    if (total <= target) break;
    // A reader that opened the entry keeps reading it; later ones refetch.
    if (env_->Unlink(e.path).ok()) {
      total -= e.size;
      evicted_++;
    }
  }
  bytes_ = total;
  written_since_count_ = 0;
  counted_ = true;
  return sys::UnlockRange(lock_fd_, 0, 1);
}

Result<bool> DiskCache::TryClaim(const std::string& key) {
  return sys::TryLockRange(lock_fd_, LockOffset(key), 1);
}

void DiskCache::Release(const std::string& key) {
  // Closing the cache (or dying) releases claims too; nothing to do on error.
  sys::UnlockRange(lock_fd_, LockOffset(key), 1).IgnoreError();
}

DiskCache::Stats DiskCache::stats() const {
  return {hits_.load(), misses_.load(), damaged_.load(), puts_.load(), evicted_.load()};
}

}  // namespace pagewise::remote
