// ForkMode transitions.
#include "restore/engine_fork.h"

namespace pagewise::restore {

void ForkMode::Request(const std::function<void()>& wake) {
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (server_gone_) return;
    // A fork right after another one: until the server has applied what it
    // recorded during the last fork (kApplying -> kServing), server_parked_
    // and filler_parked_ still hold that fork's acknowledgement. Taking it
    // for this request would let glibc take its malloc locks while the
    // server is about to allocate (ApplyRecorded, then the next request's
    // storage), and fork(2) would wait forever for a FORK message nobody
    // reads. Waiting here is safe: glibc has taken no lock yet, and the
    // server applies as soon as Release() woke it.
    cv_.wait(lk, [&] { return phase_.load() == Phase::kServing || server_gone_; });
    if (server_gone_) return;
    phase_.store(Phase::kRequested);
  }
  cv_.notify_all();
  wake();
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return AcknowledgedLocked(); });
  if (!server_gone_) phase_.store(Phase::kParked);
}

void ForkMode::Release(const std::function<void()>& wake) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (phase_.load() == Phase::kServing) return;
    phase_.store(server_gone_ ? Phase::kServing : Phase::kApplying);
  }
  cv_.notify_all();
  wake();
}

void ForkMode::WaitFillerParked() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return !filler_running_ || filler_parked_ || shutdown_; });
}

void ForkMode::ServerParked() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    server_parked_ = true;
  }
  cv_.notify_all();
}

void ForkMode::ServerApplied() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    server_parked_ = false;
    // (A new fork may already have asked again: leave a request alone.)
    if (phase_.load() == Phase::kApplying) phase_.store(Phase::kServing);
  }
  cv_.notify_all();
}

void ForkMode::ServerExited() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    server_gone_ = true;
    server_parked_ = false;
    phase_.store(Phase::kServing);
  }
  cv_.notify_all();
}

void ForkMode::ParkFiller() {
  std::unique_lock<std::mutex> lk(mu_);
  if (phase_.load() == Phase::kServing || shutdown_) return;
  filler_parked_ = true;
  cv_.notify_all();
  cv_.wait(lk, [&] { return phase_.load() == Phase::kServing || shutdown_; });
  filler_parked_ = false;
}

void ForkMode::SetFillerRunning(bool running) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    filler_running_ = running;
  }
  cv_.notify_all();
}

void ForkMode::Shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

}  // namespace pagewise::restore
