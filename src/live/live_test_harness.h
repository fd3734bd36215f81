// Test harness for live snapshots (tests only, header-only): writer threads
// that mutate memory continuously and can be paused so that a reference
// copy coincides with the snapshot instant, a latch, and image comparison.
//
// Writers store sequence stamps ((seq << 8) | writer id) into random 8-byte
// slots of random pages with relaxed atomic stores (so that writers racing
// each other on one slot are not a data race). Pause() returns when no writer
// is inside a batch; Resume() lets them go on.
//
// Thread safety: WriterPool methods are for one controlling thread; the
// writers are its own threads. Latch is safe from any thread.
#ifndef PAGEWISE_LIVE_LIVE_TEST_HARNESS_H_
#define PAGEWISE_LIVE_LIVE_TEST_HARNESS_H_

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/image.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PAGEWISE_LIVE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PAGEWISE_LIVE_SANITIZED 1
#endif
#endif

namespace pagewise::live::testing {

// Sanitizer builds run every test of the suite: tests do fewer, smaller
// rounds there.
#ifdef PAGEWISE_LIVE_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

class Latch {
 public:
  void Open() {
    {
      std::lock_guard<std::mutex> l(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

class WriterPool {
 public:
  // Writers over pages [0, len/page) of `base`; `threads` writers.
  WriterPool(char* base, size_t len, int threads, uint64_t seed)
      : base_(base),
        pages_(len / static_cast<size_t>(getpagesize())),
        threads_(threads),
        seed_(seed) {}
  ~WriterPool() { Stop(); }

  void Start() {
    for (int t = 0; t < threads_; ++t) workers_.emplace_back([this, t] { Run(t); });
  }
  // Blocks until at least n batches were completed in total.
  void WaitForBatches(uint64_t n) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return batches_ >= n || stop_; });
  }
  // Returns when every writer is outside a batch and held.
  void Pause() {
    std::unique_lock<std::mutex> l(mu_);
    paused_ = true;
    cv_.wait(l, [&] { return active_ == 0; });
  }
  void Resume() {
    {
      std::lock_guard<std::mutex> l(mu_);
      paused_ = false;
    }
    cv_.notify_all();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
      paused_ = false;
    }
    cv_.notify_all();
    for (std::thread& w : workers_) w.join();
    workers_.clear();
  }
  uint64_t writes() const { return writes_.load(std::memory_order_relaxed); }

 private:
  static constexpr int kBatch = 32;

  void Run(int id) {
    std::mt19937_64 rng(seed_ * 1000003 + static_cast<uint64_t>(id));
    const size_t page = static_cast<size_t>(getpagesize());
    uint64_t seq = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return !paused_ || stop_; });
        if (stop_) return;
        active_++;
      }
      for (int i = 0; i < kBatch; ++i) {
        const size_t p = static_cast<size_t>(rng() % pages_);
        const size_t slot = static_cast<size_t>(rng() % (page / 8));
        auto* word = reinterpret_cast<uint64_t*>(base_ + p * page + slot * 8);
        std::atomic_ref<uint64_t>(*word).store((++seq << 8) | static_cast<uint64_t>(id),
                                               std::memory_order_relaxed);
      }
      writes_.fetch_add(kBatch, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> l(mu_);
        active_--;
        batches_++;
      }
      cv_.notify_all();
    }
  }

  char* const base_;
  const size_t pages_;
  const int threads_;
  const uint64_t seed_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool paused_ = false;
  bool stop_ = false;
  int active_ = 0;
  uint64_t batches_ = 0;
  std::atomic<uint64_t> writes_{0};
};

// Compares region `region` of the image at `path` with `expect` (len
// bytes). Returns "" when equal, else a description of the first mismatch.
inline std::string CompareImage(const std::string& path, uint32_t region, const char* expect,
                                size_t len) {
  Result<std::unique_ptr<Image>> img = Image::Open(path);
  if (!img.ok()) return "open: " + img.status().ToString();
  std::vector<char> got(len);
  Status s = (*img)->Read(region, 0, got.data(), len);
  if (!s.ok()) return "read: " + s.ToString();
  const size_t page = static_cast<size_t>(getpagesize());
  size_t bad = 0;
  std::string first;
  for (size_t off = 0; off < len; off += page) {
    if (std::memcmp(got.data() + off, expect + off, page) != 0) {
      if (bad == 0) first = "page " + std::to_string(off / page);
      bad++;
    }
  }
  if (bad == 0) return "";
  return std::to_string(bad) + " of " + std::to_string(len / page) +
         " pages differ from the reference; first: " + first;
}

}  // namespace pagewise::live::testing

#endif  // PAGEWISE_LIVE_LIVE_TEST_HARNESS_H_
