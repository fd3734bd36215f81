// UffdWorld: the monitor's rules, the program's steps and the final phase.
#include "explore/uffd_world.h"

#include <poll.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/clock.h"
#include "pagewise/probe.h"
#include "pagewise/region.h"
#include "sys/task.h"

namespace pagewise::explore {
namespace {

// A monitor retrying in place gives up (and is reported) after this many
// EAGAINs: nothing else reads the events, so the answer cannot change.
constexpr int kInPlaceRetries = 8;

const char* OpName(FillOp op) {
  switch (op) {
    case FillOp::kCopy:
      return "COPY";
    case FillOp::kZeropage:
      return "ZEROPAGE";
    case FillOp::kMove:
      return "MOVE";
  }
  return "?";
}

std::string Pages(size_t i, size_t n) {
  return n == 1 ? "p" + std::to_string(i)
                : "p" + std::to_string(i) + "..p" + std::to_string(i + n - 1);
}

}  // namespace

UffdWorld::~UffdWorld() {
  engine_.reset();  // Stop(): joins its threads, closes its userfaultfds
  {
    std::lock_guard<std::mutex> lk(mu_);
    spaces_.clear();  // closing wakes every thread still waiting on them
  }
  if (child_ > 0) {
    int ws = 0;
    Result<bool> reaped = sys::ReapChild(child_, false, &ws);
    if (reaped.ok() && !*reaped) {
      sys::SignalProcess(child_, 9).IgnoreError();
      (void)sys::ReapChild(child_, true, &ws);
    }
  }
  const size_t len = opt_.pages * ps_;
  // After a plain mremap the first address is not ours any more: another
  // thread's mmap (the sanitizers' allocators, whose thread records live in
  // small mappings) may be there now. Unmapping it would pull memory from
  // under its owner, and the next world's region could then be mapped and
  // registered there: the owner's next access would wait forever on a
  // userfaultfd nobody serves (ExploreCli hung so under ASan).
  char* const region = remapped_base_.load() == 0 || dontunmap_ ? region_ : nullptr;
  for (char* p : {region, target_, srcbuf_, staging_}) {
    if (p != nullptr) env_->Munmap(p, len).IgnoreError();
  }
  if (remapped_base_.load() != 0) {
    env_->Munmap(reinterpret_cast<void*>(remapped_base_.load()), len).IgnoreError();
  }
  if (shared_ != nullptr) env_->Munmap(shared_, len + ps_).IgnoreError();
}

Status UffdWorld::Setup(const UffdWorldOptions& options) {
  opt_ = options;
  ps_ = PageSize();
  const size_t n = opt_.pages, len = n * ps_;
  stash_.assign(len, 0);
  for (size_t i = 0; i < n; ++i) {
    if (std::count(opt_.zero_pages.begin(), opt_.zero_pages.end(), i)) continue;
    for (size_t j = 0; j < ps_; ++j) stash_[i * ps_ + j] = static_cast<char>('A' + i + j % 7);
  }
  auto map = [&](size_t bytes, int prot, int flags) -> Result<char*> {
    PW_ASSIGN_OR_RETURN(void* p, env_->Mmap(nullptr, bytes, prot, flags, -1, 0));
    return static_cast<char*>(p);
  };
  const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
  PW_ASSIGN_OR_RETURN(region_, map(len, PROT_READ | PROT_WRITE, anon));
  env_->Madvise(region_, len, MADV_NOHUGEPAGE).IgnoreError();
  PW_ASSIGN_OR_RETURN(srcbuf_, map(len, PROT_READ | PROT_WRITE, anon));
  PW_ASSIGN_OR_RETURN(staging_, map(len, PROT_READ | PROT_WRITE, anon));
  // The child must not share the sources: a MOVE refuses a shared page.
  PW_RETURN_IF_ERROR(env_->Madvise(srcbuf_, len, MADV_DONTFORK));
  PW_RETURN_IF_ERROR(env_->Madvise(staging_, len, MADV_DONTFORK));
  PW_ASSIGN_OR_RETURN(shared_, map(len + ps_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS));
  if (opt_.reserve_target) {
    PW_ASSIGN_OR_RETURN(target_, map(len, PROT_NONE, anon));
  }

  using namespace uffd_feature;
  sys::Userfaultfd::Options uo;
  uo.required_features = kEventFork | kEventRemap | kEventRemove | kEventUnmap;
  if (opt_.fill == FillOp::kMove) uo.required_features |= kMove;
  uo.env = env_;
  PW_ASSIGN_OR_RETURN(sys::Userfaultfd uffd, sys::Userfaultfd::Open(uo));
  PW_RETURN_IF_ERROR(
      uffd.Register(reinterpret_cast<uint64_t>(region_), len, sys::kRegisterMissing));
  PW_RETURN_IF_ERROR(SetupGate());
  fds_.push_back(uffd.fd());  // (the forked child closes its copy)
  if (opt_.engine) {
    restore::EngineOptions eo;
    eo.env = env_;
    eo.fill.fault_window_pages = 1;  // a fault installs its own page only
    eo.fill.background_batch_pages = opt_.batch_pages;
    eo.fill.background_fill = opt_.filler;
    eo.fill.use_zeropage = !opt_.zero_pages.empty();
    eo.fill.max_latency_samples = 0;
    // The engine COPYs straight from srcbuf_ (PageSource::Direct), so a
    // gated source page stops its ioctl mid-batch in the kernel.
    engine_ = std::make_unique<restore::Engine>(MemorySource(srcbuf_, len), std::move(eo));
    engine_->AddSpace(std::move(uffd), {{reinterpret_cast<uint64_t>(region_), len, 0}});
    return Status::Ok();
  }
  auto s = std::make_unique<Space>();
  s->uffd = std::move(uffd);
  s->base = reinterpret_cast<uint64_t>(region_);
  s->st.assign(n, State::kMissing);
  spaces_.push_back(std::move(s));
  return Status::Ok();
}

Status UffdWorld::SetupGate() {
  const size_t n = opt_.pages;
  sys::Userfaultfd::Options go;
  go.env = env_;
  PW_ASSIGN_OR_RETURN(gate_, sys::Userfaultfd::Open(go));
  for (size_t i = 0; i < n; ++i) {
    if (std::count(opt_.gated.begin(), opt_.gated.end(), i)) {
      PW_RETURN_IF_ERROR(gate_.Register(reinterpret_cast<uint64_t>(srcbuf_ + i * ps_), ps_,
                                        sys::kRegisterMissing));
    } else {
      std::memcpy(srcbuf_ + i * ps_, stash_.data() + i * ps_, ps_);
    }
  }
  return Status::Ok();
}

Status UffdWorld::Begin(Controller& c) {
  if (!opt_.engine) return c.Prologue({}, {});
  c.Attach();
  PW_RETURN_IF_ERROR(engine_->Start());
  std::vector<std::string> expect;
  if (opt_.filler) expect.push_back("engine.filler");
  return c.Prologue({"engine.loop"}, expect);
}

void UffdWorld::AddWorkers(Controller& c) {
  if (opt_.engine) return;
  c.AddWorker(
      "reader", [this] { return ReaderNext(); }, [this] { ReaderStep(); });
  if (opt_.filler) {
    c.AddWorker(
        "filler", [this] { return FillerNext(); }, [this] { FillerStep(); });
  }
}

void UffdWorld::Note(const std::string& line) { log_.push_back(line); }

UffdWorld::Installed UffdWorld::Install(std::unique_lock<std::mutex>& lk, Space& s, size_t i,
                                        size_t n, FillOp op, bool background) {
  for (size_t k = i; k < i + n; ++k) {
    if (s.at(k) == State::kGone) {
      fill_violations_.push_back(std::string(OpName(op)) + " into " + Pages(k, 1) +
                                 ", unmapped (its UNMAP was read): an unmapped range was filled "
                                 "again");
    }
  }
  const uint64_t dst = s.base + i * ps_, len = n * ps_;
  const std::string what =
      std::string(OpName(op)) + " " + Pages(i, n) + (s.child ? " (child)" : "");
  // The rule: a fill holds the space (mu_) until its ioctl returned, so no
  // event can be read meanwhile. A COPY may drop the mm's lock mid-batch
  // (its source page was not resident) and retake it later; only an event
  // still unread (mmap_changing) then stops the rest of the batch. Were the
  // REMOVE read meanwhile, the batch would land in the dropped range.
  const bool unlocked = background && PW_TESTING_VARIANT(kFillPastRemove);
  if (unlocked) lk.unlock();  // negative control: fill without holding the space
  FillResult r;
  switch (op) {
    case FillOp::kCopy:
      r = s.uffd.Copy(dst, srcbuf_ + i * ps_, len);
      break;
    case FillOp::kZeropage:
      r = s.uffd.Zeropage(dst, len);
      break;
    case FillOp::kMove:
      std::memcpy(staging_ + i * ps_, stash_.data() + i * ps_, len);
      r = s.uffd.Move(dst, reinterpret_cast<uint64_t>(staging_ + i * ps_), len);
      break;
  }
  if (unlocked) lk.lock();
  const size_t done = static_cast<size_t>(std::min<uint64_t>(r.bytes, len) / ps_);
  for (size_t k = i; k < i + done; ++k) {
    if (s.at(k) == State::kMissing) s.at(k) = State::kFilled;
  }
  Installed out{Fill::kDone, done};
  if (r.ok()) {
    Note(what + ": done");
  } else if (r.error == EAGAIN) {
    // A non-cooperative event is pending (mmap_changing): what landed
    // stays, the rest must wait until the events were read.
    Note(what + ": EAGAIN after " + std::to_string(done) + " page(s)");
    out.fill = Fill::kAgain;
  } else if (r.error == EEXIST) {
    // Already there (a duplicate fault, or an install that raced ours).
    Note(what + ": EEXIST after " + std::to_string(done) + " page(s)");
    for (size_t k = i + done; k < i + n; ++k) {
      if (s.at(k) == State::kMissing) s.at(k) = State::kFilled;
    }
    s.uffd.Wake(dst, len).IgnoreError();
  } else if (r.error == ENOENT || r.error == ESRCH || r.error == EINVAL) {
    // The range or its process is gone (UNMAP or exit not read yet).
    Note(what + ": " + std::strerror(r.error) + " (gone)");
    for (size_t k = i + done; k < i + n; ++k) s.at(k) = State::kGone;
  } else {
    Note(what + ": unexpected " + std::strerror(r.error));
    fill_violations_.push_back(what + " failed: " + std::strerror(r.error));
    out.fill = Fill::kFailed;
  }
  return out;
}

size_t UffdWorld::DrainLocked() {
  size_t total = 0;
  // A FORK adds a space while we go: index, not iterators.
  for (size_t k = 0; k < spaces_.size() && !closed_; ++k) {
    for (;;) {
      UffdEvent e;
      Result<size_t> n = spaces_[k]->uffd.ReadEvents(&e, 1);
      if (!n.ok() || *n == 0) break;
      ++total;
      ApplyLocked(*spaces_[k], e);
    }
  }
  return total;
}

void UffdWorld::ApplyLocked(Space& s, const UffdEvent& e) {
  const uint64_t end = s.base + opt_.pages * ps_;
  auto each = [&](uint64_t lo, uint64_t hi, State to) {
    for (size_t i = 0; i < opt_.pages; ++i) {
      const uint64_t a = s.base + i * ps_;
      if (a >= lo && a < hi && s.at(i) != State::kGone) s.at(i) = to;
    }
  };
  switch (e.kind) {
    case UffdEvent::Kind::kPagefault:
      Note("read PAGEFAULT at +" + std::to_string((e.address - s.base) / ps_) + " pages" +
           (s.child ? " (child)" : ""));
      faults_.push_back({&s, e.address & ~static_cast<uint64_t>(ps_ - 1)});
      break;
    case UffdEvent::Kind::kFork: {
      auto c = std::make_unique<Space>();
      c->uffd = sys::Userfaultfd::Adopt(e.fork_fd, s.uffd.features(), env_);
      c->base = s.base;
      c->child = true;
      if (PW_TESTING_VARIANT(kForkChildFromParentState)) {
        // Negative control: the child shares the parent's live page map.
        c->state_from = s.state_from ? s.state_from : &s;
        c->st = s.st;
      } else {
        // The child has exactly what the parent had when fork ran: fills
        // could not land between fork and this read (EAGAIN).
        c->st.resize(opt_.pages);
        for (size_t i = 0; i < opt_.pages; ++i) c->st[i] = s.at(i);
      }
      Note("read FORK: child space");
      {
        std::lock_guard<std::mutex> fl(fds_mu_);
        fds_.push_back(c->uffd.fd());
      }
      spaces_.push_back(std::move(c));
      break;
    }
    case UffdEvent::Kind::kRemap:
      Note("read REMAP");
      if (e.from == s.base && e.len == opt_.pages * ps_) s.base = e.to;
      break;
    case UffdEvent::Kind::kRemove:
      Note("read REMOVE");
      each(e.start, std::min(e.end, end), State::kDropped);
      break;
    case UffdEvent::Kind::kUnmap:
      Note("read UNMAP");
      each(e.start, std::min(e.end, end), State::kGone);
      break;
    default:
      Note("read an unknown message");
      break;
  }
}

bool UffdWorld::AnyReadable() {
  std::lock_guard<std::mutex> lk(fds_mu_);
  std::vector<struct pollfd> fds;
  for (int fd : fds_) fds.push_back({fd, POLLIN, 0});
  Result<int> n = env_->Poll(fds.data(), fds.size(), 0);
  return n.ok() && *n > 0;
}

UffdWorld::Again UffdWorld::AfterAgain(const char* who, const std::function<Fill()>& retry) {
  if (!PW_TESTING_VARIANT(kEagainWithoutDrain)) {
    // The rule: read the pending events first; the caller retries what is
    // still missing in its next step (after the released thread ran).
    DrainLocked();
    return Again::kDrained;
  }
  // Negative control: retry at once, without reading.
  for (int k = 0; k < kInPlaceRetries; ++k) {
    if (retry() != Fill::kAgain) return Again::kResolved;
  }
  stuck_ = true;
  fill_violations_.push_back(std::string("livelock: the ") + who + " retried EAGAIN " +
                             std::to_string(kInPlaceRetries + 1) +
                             " times without reading the pending events; mmap_changing stays "
                             "set until they are read, so it never succeeds and the thread "
                             "that raised the event stays blocked");
  return Again::kStuck;
}

void UffdWorld::ServeFault(std::unique_lock<std::mutex>& lk, Space& s, uint64_t addr) {
  const bool inside = addr >= s.base && addr < s.base + opt_.pages * ps_;
  const size_t i = inside ? (addr - s.base) / ps_ : 0;
  auto serve = [&]() -> Fill {
    if (!inside) {
      // Registered memory the source has nothing for (a range a
      // DONTUNMAP mremap left behind): fresh anonymous memory reads zero.
      FillResult r = s.uffd.Zeropage(addr, ps_);
      Note("ZEROPAGE outside the region: " + std::string(r.ok() ? "done" : std::strerror(r.error)));
      if (r.error == EAGAIN) return Fill::kAgain;
      if (r.error == EEXIST) s.uffd.Wake(addr, ps_).IgnoreError();
      return Fill::kDone;
    }
    switch (s.at(i)) {
      case State::kMissing: {
        const bool zero = std::count(opt_.zero_pages.begin(), opt_.zero_pages.end(), i) > 0;
        return Install(lk, s, i, 1, zero ? FillOp::kZeropage : FillOp::kCopy, false).fill;
      }
      case State::kDropped:
        return Install(lk, s, i, 1, FillOp::kZeropage, false).fill;
      case State::kFilled:
      case State::kGone:
        // There already (a duplicate fault message): wake the thread.
        Note("WAKE " + Pages(i, 1) + (s.child ? " (child)" : "") + ": believed filled");
        s.uffd.Wake(addr, ps_).IgnoreError();
        return Fill::kDone;
    }
    return Fill::kDone;
  };
  if (serve() != Fill::kAgain) return;
  // Serve it again in a later step, after the events.
  if (AfterAgain("reader", serve) == Again::kDrained) faults_.insert(faults_.begin(), {&s, addr});
}

}  // namespace pagewise::explore
