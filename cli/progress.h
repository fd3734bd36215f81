// ProgressBar: one self-overwriting progress line on stderr for long CLI
// operations. Draws only when stderr is a terminal (never into pipes or CI
// logs), at most ~10 times a second, and clears itself on Finish().
//
// Thread safety: Update() may be called from any thread (e.g. a library
// progress callback on a worker thread); drawing is serialised internally.
#ifndef PAGEWISE_CLI_PROGRESS_H_
#define PAGEWISE_CLI_PROGRESS_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

namespace pagewise::cli {

class ProgressBar {
 public:
  // `unit_bytes`: if true, `done`/`total` are bytes and shown as MiB with a rate.
  ProgressBar(std::string label, uint64_t total, bool unit_bytes = false);
  ~ProgressBar();  // calls Finish()

  // Reports progress (monotonic is expected, not required).
  void Update(uint64_t done);
  void SetTotal(uint64_t total) { total_.store(total, std::memory_order_relaxed); }
  // Clears the line. Idempotent.
  void Finish();

  bool enabled() const { return enabled_; }

 private:
  void Draw(uint64_t done, bool force);

  const std::string label_;
  std::atomic<uint64_t> total_;
  const bool unit_bytes_;
  const bool enabled_;
  const uint64_t start_ns_;
  std::atomic<uint64_t> last_draw_ns_{0};
  std::mutex draw_mu_;
  bool finished_ = false;
};

}  // namespace pagewise::cli

#endif  // PAGEWISE_CLI_PROGRESS_H_
