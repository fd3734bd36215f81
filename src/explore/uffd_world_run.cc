// UffdWorld: the workers' steps, the program's steps, the final phase and
// the checks.
#include <poll.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "base/clock.h"
#include "explore/uffd_world.h"
#include "sys/task.h"

namespace pagewise::explore {
namespace {

constexpr size_t kServeBudget = 2000;
constexpr uint64_t kFinalDeadlineNs = 10ull * 1000 * 1000 * 1000;
constexpr int64_t kSecondNs = 1000 * 1000 * 1000;

std::string PageName(size_t i) { return "p" + std::to_string(i); }

}  // namespace

// ---- workers ---------------------------------------------------------------

bool UffdWorld::NextRun(size_t* i, size_t* n) {
  if (spaces_.empty()) return false;
  Space& s = *spaces_[0];
  auto zero = [&](size_t k) {
    return std::count(opt_.zero_pages.begin(), opt_.zero_pages.end(), k) > 0;
  };
  for (size_t k = 0; k < opt_.pages; ++k) {
    if (s.at(k) != State::kMissing) continue;
    size_t m = 1;
    while (k + m < opt_.pages && m < opt_.batch_pages && s.at(k + m) == State::kMissing &&
           zero(k + m) == zero(k)) {
      ++m;
    }
    *i = k;
    *n = m;
    return true;
  }
  return false;
}

std::optional<std::string> UffdWorld::FillerNext() {
  std::unique_lock<std::mutex> lk(mu_);
  size_t i, n;
  if (stuck_ || !opt_.filler || !NextRun(&i, &n)) return std::nullopt;
  const bool zero = std::count(opt_.zero_pages.begin(), opt_.zero_pages.end(), i) > 0;
  const FillOp op = zero ? FillOp::kZeropage : opt_.fill;
  return std::string("fill ") + PageName(i) + (n > 1 ? ".." + PageName(i + n - 1) : "") + " (" +
         (op == FillOp::kCopy   ? "COPY"
          : op == FillOp::kMove ? "MOVE"
                                : "ZEROPAGE") +
         ")";
}

void UffdWorld::FillerStep() {
  std::unique_lock<std::mutex> lk(mu_);
  size_t i, n;
  if (stuck_ || !NextRun(&i, &n)) return;
  Space& s = *spaces_[0];
  const bool zero = std::count(opt_.zero_pages.begin(), opt_.zero_pages.end(), i) > 0;
  const FillOp op = zero ? FillOp::kZeropage : opt_.fill;
  Installed in = Install(lk, s, i, n, op, true);
  if (in.fill != Fill::kAgain) return;
  size_t at = i + in.done, left = n - in.done;
  AfterAgain("filler", [&] {
    Installed r = Install(lk, s, at, left, op, true);
    at += r.done;
    left -= r.done;
    return left == 0 ? Fill::kDone : r.fill;
  });
}

std::optional<std::string> UffdWorld::ReaderNext() {
  std::unique_lock<std::mutex> lk(mu_, std::try_to_lock);
  if (!lk.owns_lock()) {
    // A fill in flight holds the space (blocked mid-batch): reading waits
    // for it, which is a step of its own.
    if (AnyReadable()) return std::string("read a message (waits for the fill in flight)");
    return std::nullopt;
  }
  if (stuck_) return std::nullopt;
  if (!faults_.empty())
    return "serve the fault at " + PageName((faults_[0].addr - faults_[0].s->base) / ps_) +
           " again";
  if (AnyReadable()) return std::string("read a message");
  return std::nullopt;
}

void UffdWorld::ReaderStep() {
  std::unique_lock<std::mutex> lk(mu_);
  if (stuck_) return;
  if (faults_.empty()) {
    for (size_t k = 0; k < spaces_.size() && faults_.empty(); ++k) {
      UffdEvent e;
      Result<size_t> n = spaces_[k]->uffd.ReadEvents(&e, 1);
      if (!n.ok() || *n == 0) continue;
      ApplyLocked(*spaces_[k], e);
      if (e.kind != UffdEvent::Kind::kPagefault) return;  // one message a step
    }
  }
  if (faults_.empty()) return;
  const Pending p = faults_.front();
  faults_.erase(faults_.begin());
  ServeFault(lk, *p.s, p.addr);
}

// ---- program steps ---------------------------------------------------------

char* UffdWorld::Base() const {
  const uint64_t r = remapped_base_.load();
  return r != 0 ? reinterpret_cast<char*>(r) : region_;
}

void UffdWorld::OpenGate() {
  for (size_t i : opt_.gated) {
    gate_.Copy(reinterpret_cast<uint64_t>(srcbuf_ + i * ps_), stash_.data() + i * ps_, ps_);
  }
}

void UffdWorld::Fork() {
  // Not libc's fork: it would hold malloc's locks while the kernel waits
  // for the monitor (this process) to read the FORK event.
  Result<pid_t> r = sys::ForkRaw();
  if (!r.ok()) return;  // the child checks then report the missing child
  if (*r == 0) ChildMain();
  child_.store(*r);
}

void UffdWorld::ChildMain() {
  // Async-signal-safe from here: the parent was multithreaded.
  const char* base = Base();
  // Drop the parent's userfaultfds the clone copied: the parent must be
  // able to close them (a closed userfaultfd wakes its waiters only when
  // its last descriptor is gone). The child's own one is not among them.
  for (int fd : fds_) env_->Close(fd).IgnoreError();
  env_->Close(gate_.fd()).IgnoreError();
  auto* go = reinterpret_cast<std::atomic<uint32_t>*>(shared_);
  while (go->load() == 0) sys::FutexWait(go, 0, -1, true);
  for (size_t i = 0; i < opt_.pages; ++i) std::memcpy(shared_ + ps_ * (1 + i), base + i * ps_, ps_);
  go[1].store(1);
  sys::FutexWakeAll(&go[1], true);
  sys::ExitChild(0);
}

void UffdWorld::Touch(size_t i, std::vector<char>* seen) {
  const char* p = Base() + i * ps_;
  seen->assign(p, p + ps_);
}

void UffdWorld::Advise(size_t lo, size_t hi, int advice) {
  env_->Madvise(Base() + lo * ps_, (hi - lo) * ps_, advice).IgnoreError();
}

void UffdWorld::Remap(bool dontunmap) {
  const size_t len = opt_.pages * ps_;
  const int flags = MREMAP_MAYMOVE | MREMAP_FIXED | (dontunmap ? MREMAP_DONTUNMAP : 0);
  Result<void*> r = env_->Mremap(region_, len, len, flags, target_);
  if (!r.ok()) return;  // the checks report the region unread
  dontunmap_ = dontunmap;
  remapped_base_.store(reinterpret_cast<uint64_t>(*r));
  target_ = nullptr;  // it is the region now (the destructor unmaps remapped_base_)
}

void UffdWorld::UnmapAndReuse(size_t lo, size_t hi) {
  char* p = Base() + lo * ps_;
  const size_t len = (hi - lo) * ps_;
  // One mmap(MAP_FIXED): the kernel unmaps the old pages (raising UNMAP,
  // as munmap(2) does) and maps the new ones in the same mmap_lock hold.
  // munmap then mmap would leave a hole in which another thread's mmap
  // (the sanitizers' allocators map small blocks) could land; this world
  // would then unmap that memory at its end, and a later world's region
  // could be registered over what the allocator still uses.
  (void)env_->Mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

// ---- final phase -----------------------------------------------------------

void UffdWorld::CloseAll() {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return;
  if (engine_ != nullptr) {
    // Stopping the engine closes its userfaultfds: every waiting thread
    // wakes (a fault then finds no monitor and maps a zero page).
    engine_->Stop();
    closed_ = true;
    return;
  }
  // Read what is pending (releasing the threads whose events wait), then
  // unregister (waking the faulting threads: they find plain memory).
  DrainLocked();
  for (auto& s : spaces_) {
    if (!s->child) s->uffd.Unregister(s->base, opt_.pages * ps_).IgnoreError();
  }
  if (dontunmap_) {
    spaces_[0]
        ->uffd.Unregister(reinterpret_cast<uint64_t>(region_), opt_.pages * ps_)
        .IgnoreError();
  }
  faults_.clear();
  // Closing the userfaultfds wakes every thread still waiting on them (a
  // faulting thread then finds no monitor and maps a zero page). The
  // Space objects stay: a worker's ioctl in progress still refers to one.
  for (auto& s : spaces_) s->uffd = sys::Userfaultfd();
  closed_ = true;
}

bool UffdWorld::ServeUntil(const std::function<bool()>& done, const char* what,
                           std::vector<std::string>* violations) {
  const uint64_t deadline = NowNs() + kFinalDeadlineNs;
  size_t served = 0;
  for (;;) {
    if (done()) return true;
    bool did = false;
    int fd0 = -1, fd1 = -1;
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (stuck_ || closed_) return false;
      if (faults_.empty()) {
        for (size_t k = 0; k < spaces_.size() && !did; ++k) {
          UffdEvent e;
          Result<size_t> n = spaces_[k]->uffd.ReadEvents(&e, 1);
          if (!n.ok() || *n == 0) continue;
          ApplyLocked(*spaces_[k], e);
          did = true;
        }
      }
      if (!faults_.empty()) {
        const Pending p = faults_.front();
        faults_.erase(faults_.begin());
        ServeFault(lk, *p.s, p.addr);
        did = true;
      }
      if (!spaces_.empty()) fd0 = spaces_[0]->uffd.fd();
      if (spaces_.size() > 1) fd1 = spaces_.back()->uffd.fd();
    }
    if (did) {
      if (++served <= kServeBudget) continue;
      violations->push_back("hang: " + std::string(what) + " did not finish after the monitor " +
                            "served " + std::to_string(kServeBudget) +
                            " messages (a thread keeps faulting on a page the monitor believes "
                            "is there)");
      return false;
    }
    if (NowNs() > deadline) {
      violations->push_back("hang: " + std::string(what) + " did not finish within 10 s");
      return false;
    }
    // Sleep until the next message (or 1 ms: `done` may change without one).
    struct pollfd fds[2] = {{fd0, POLLIN, 0}, {fd1, POLLIN, 0}};
    (void)env_->Poll(fds, fd1 >= 0 ? 2 : 1, 1);
  }
}

void UffdWorld::ReadWhileServing(const char* base, std::vector<View>* out, const char* what,
                                 std::vector<std::string>* violations) {
  std::atomic<bool> done{false};
  out->assign(opt_.pages, View{});
  std::thread reader([&] {
    for (size_t i = 0; i < opt_.pages; ++i) {
      (*out)[i].bytes.assign(base + i * ps_, base + (i + 1) * ps_);
    }
    done.store(true);
  });
  const bool ok = ServeUntil([&] { return done.load(); }, what, violations);
  if (!ok) CloseAll();
  reader.join();
  for (View& v : *out) v.ok = ok;
}

// ---- final phase with the engine ---------------------------------------------

bool UffdWorld::ReadEngineServed(const char* base, std::vector<View>* out, const char* what,
                                 std::vector<std::string>* violations) {
  out->assign(opt_.pages, View{});
  std::atomic<uint32_t> done{0};
  std::thread reader([&] {
    for (size_t i = 0; i < opt_.pages; ++i) {
      (*out)[i].bytes.assign(base + i * ps_, base + (i + 1) * ps_);
    }
    done.store(1);
    sys::FutexWakeAll(&done, false);
  });
  const uint64_t deadline = NowNs() + kFinalDeadlineNs;
  for (uint64_t now = NowNs(); done.load() == 0 && now < deadline; now = NowNs()) {
    sys::FutexWait(&done, 0, static_cast<int64_t>(deadline - now), false);
  }
  const bool ok = done.load() == 1;
  if (!ok) {
    violations->push_back("hang: " + std::string(what) + " did not finish within 10 s");
    CloseAll();
  }
  reader.join();
  for (View& v : *out) v.ok = ok;
  return ok;
}

std::atomic<uint32_t>* UffdWorld::ReleaseChild() {
  auto* go = reinterpret_cast<std::atomic<uint32_t>*>(shared_);
  go->store(1);
  sys::FutexWakeAll(go, true);
  return go;
}

void UffdWorld::TakeChildView(pid_t child, bool copied) {
  int ws = 0;
  if (!copied) sys::SignalProcess(child, 9).IgnoreError();
  (void)sys::ReapChild(child, true, &ws);
  child_.store(-1);
  child_view_.assign(opt_.pages, View{});
  for (size_t i = 0; i < opt_.pages; ++i) {
    child_view_[i].ok = copied;
    child_view_[i].bytes.assign(shared_ + ps_ * (1 + i), shared_ + ps_ * (2 + i));
  }
}

bool UffdWorld::ChildCopied() {
  auto* go = ReleaseChild();
  const uint64_t deadline = NowNs() + kFinalDeadlineNs;
  for (uint64_t now = NowNs(); go[1].load() == 0 && now < deadline; now = NowNs()) {
    sys::FutexWait(&go[1], 0, static_cast<int64_t>(deadline - now), true);
  }
  return go[1].load() == 1;
}

void UffdWorld::FinishEngine(Controller& c, std::vector<std::string>* violations) {
  // The engine serves freely from here; every program thread finishes.
  c.FreeRun();
  if (!c.WaitProgramsDone(10 * kSecondNs)) {
    violations->push_back("hang: " + c.Unfinished() + " never finished");
    CloseAll();
    c.WaitProgramsDone(10 * kSecondNs);
  }
  if (!closed_ && opt_.filler) {
    const Status st = engine_->WaitResident(std::chrono::seconds(10));
    if (!st.ok()) violations->push_back("the background fill did not complete: " + st.ToString());
  }
  bool ok = !closed_ && ReadEngineServed(Base(), &parent_view_, "reading the region", violations);
  if (ok && dontunmap_) {
    ok = ReadEngineServed(region_, &old_view_, "reading the range mremap left", violations);
  }
  const pid_t child = child_.load();
  if (child > 0) {
    const bool copied = ok && ChildCopied();
    if (ok && !copied) violations->push_back("hang: the forked child did not finish within 10 s");
    TakeChildView(child, copied);
  }
  const Status st = engine_->status();
  if (!st.ok()) violations->push_back("the restore engine failed: " + st.ToString());
  // Stopped before the controller goes: its threads must not reach a
  // pause point after that.
  engine_->Stop();
  closed_ = true;
}

void UffdWorld::Finish(Controller& c, std::vector<std::string>* violations) {
  if (engine_ != nullptr) {
    FinishEngine(c, violations);
    return;
  }
  c.FreeRun();
  if (!stuck_)
    ServeUntil([&] { return c.WaitProgramsDone(0); }, "the program's threads", violations);
  if (stuck_) CloseAll();
  if (!c.WaitProgramsDone(0)) {
    CloseAll();
    if (!c.WaitProgramsDone(10 * kSecondNs)) {
      violations->push_back("hang: " + c.Unfinished() + " never finished");
    }
  }
  if (!closed_ && opt_.filler) {
    for (int k = 0; k < 64 && FillerNext(); ++k) FillerStep();
  }
  if (!closed_) ReadWhileServing(Base(), &parent_view_, "reading the region", violations);
  if (!closed_ && dontunmap_) {
    ReadWhileServing(region_, &old_view_, "reading the range mremap left", violations);
  }
  const pid_t child = child_.load();
  if (child > 0) {
    auto* go = ReleaseChild();
    const bool ok =
        !closed_ && ServeUntil([&] { return go[1].load() == 1; }, "the forked child", violations);
    TakeChildView(child, ok);
  }
  std::lock_guard<std::mutex> lk(mu_);
  violations->insert(violations->end(), fill_violations_.begin(), fill_violations_.end());
}

// ---- checks ----------------------------------------------------------------

std::string UffdWorld::Compare(const View& v, size_t i, bool zero) const {
  if (!v.ok) return "was not read (see the hang above)";
  const char* want = stash_.data() + i * ps_;
  const bool is_zero = std::all_of(v.bytes.begin(), v.bytes.end(), [](char b) { return b == 0; });
  const bool is_src = std::memcmp(v.bytes.data(), want, ps_) == 0;
  if (zero ? is_zero : is_src) return "";
  if (is_src) return "reads source data, expected zero";
  if (is_zero) return "reads zero, expected its source data";
  return "reads bytes that are neither its source nor zero";
}

void UffdWorld::ExpectParent(size_t i, bool zero, const char* what,
                             std::vector<std::string>* out) const {
  if (i >= parent_view_.size()) return;
  const std::string d = Compare(parent_view_[i], i, zero);
  if (!d.empty()) out->push_back(std::string(what) + ": " + PageName(i) + " " + d);
}

void UffdWorld::ExpectChild(size_t i, const char* what, std::vector<std::string>* out) const {
  if (i >= child_view_.size()) {
    out->push_back(std::string(what) + ": no forked child to check");
    return;
  }
  const std::string d = Compare(child_view_[i], i, false);
  if (!d.empty()) out->push_back(std::string(what) + ": the child's " + PageName(i) + " " + d);
}

void UffdWorld::ExpectOldZero(size_t i, std::vector<std::string>* out) const {
  if (i >= old_view_.size()) return;
  const std::string d = Compare(old_view_[i], i, true);
  if (!d.empty())
    out->push_back("the range MREMAP_DONTUNMAP left behind: " + PageName(i) + " " + d);
}

}  // namespace pagewise::explore
