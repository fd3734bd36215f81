// UffdLoop: poll a set of userfaultfds, read them in batches, dispatch.
#include "sys/uffd_loop.h"

#include <sys/eventfd.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "base/clock.h"

namespace pagewise::sys {
namespace {

// One non-blocking read of up to `capacity` messages, dispatched events
// first, then faults (see the header). Returns how many were read.
Result<size_t> ReadBatch(Env* env, int fd, uint64_t tag, UffdHandler* handler, UffdEvent* buffer,
                         size_t capacity) {
  PW_ASSIGN_OR_RETURN(size_t n, env->UffdRead(fd, buffer, capacity));
  for (size_t i = 0; i < n; ++i) {
    if (buffer[i].kind != UffdEvent::Kind::kPagefault)
      DispatchUffdEvent(env, tag, buffer[i], handler);
  }
  for (size_t i = 0; i < n; ++i) {
    if (buffer[i].kind == UffdEvent::Kind::kPagefault)
      DispatchUffdEvent(env, tag, buffer[i], handler);
  }
  return n;
}

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

void DispatchUffdEvent(Env* env, uint64_t tag, const UffdEvent& e, UffdHandler* handler) {
  switch (e.kind) {
    case UffdEvent::Kind::kPagefault:
      handler->OnPagefault(tag, e);
      return;
    case UffdEvent::Kind::kFork:
      // The child's userfaultfd is ours until someone takes it: a handler
      // that does not serve children must not leak it (the child's ranges
      // would stay registered with nobody reading).
      if (!handler->OnFork(tag, e) && e.fork_fd >= 0) env->Close(e.fork_fd).IgnoreError();
      return;
    case UffdEvent::Kind::kRemap:
      handler->OnRemap(tag, e);
      return;
    case UffdEvent::Kind::kRemove:
      handler->OnRemove(tag, e);
      return;
    case UffdEvent::Kind::kUnmap:
      handler->OnUnmap(tag, e);
      return;
    case UffdEvent::Kind::kUnknown:
      handler->OnUnknown(tag, e);
      return;
  }
  handler->OnUnknown(tag, e);
}

Result<size_t> DrainUffd(Env* env, int fd, uint64_t tag, UffdHandler* handler, UffdEvent* buffer,
                         size_t capacity, int max_rounds) {
  size_t total = 0;
  for (int round = 0; round < max_rounds; ++round) {
    Result<size_t> n = ReadBatch(env, fd, tag, handler, buffer, capacity);
    if (!n.ok()) return n.status();
    total += *n;
    if (*n < capacity) break;
  }
  return total;
}

Result<std::unique_ptr<UffdLoop>> UffdLoop::Create(Env* env, const Options& options) {
  if (options.batch == 0 || options.batch > 4096 || options.max_rounds < 1) {
    return Status::InvalidArgument("UffdLoop: batch must be 1..4096 and max_rounds >= 1");
  }
  PW_ASSIGN_OR_RETURN(int wake, env->EventfdCreate(0, EFD_NONBLOCK));
  std::unique_ptr<UffdLoop> loop(new UffdLoop(env, options, wake));
  // The message buffer never moves: a handler may grow the poll set while
  // a batch read into it is being dispatched.
  const size_t len = RoundUp(options.batch * sizeof(UffdEvent), PageSize());
  PW_ASSIGN_OR_RETURN(
      void* m, env->Mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  loop->events_map_ = m;
  loop->events_len_ = len;
  loop->events_ = static_cast<UffdEvent*>(m);
  for (size_t i = 0; i < options.batch; ++i) new (&loop->events_[i]) UffdEvent();
  PW_RETURN_IF_ERROR(loop->Grow(std::max<size_t>(options.capacity, 1)));
  return loop;
}

UffdLoop::UffdLoop(Env* env, const Options& options, int wake_fd)
    : env_(env), options_(options), wake_fd_(wake_fd) {}

UffdLoop::~UffdLoop() {
  // Teardown: nothing to act on if these fail.
  if (map_ != nullptr) env_->Munmap(map_, map_len_).IgnoreError();
  if (events_map_ != nullptr) env_->Munmap(events_map_, events_len_).IgnoreError();
  env_->Close(wake_fd_).IgnoreError();
}

// Layout of the poll-set mapping: (capacity + 1) pollfds (the wake eventfd
// first), then capacity entries.
Status UffdLoop::Grow(size_t entries) {
  if (entries <= capacity_) return Status::Ok();
  const size_t cap = std::max(entries, capacity_ * 2);
  const size_t pfd_bytes = RoundUp((cap + 1) * sizeof(struct pollfd), alignof(Entry));
  const size_t len = RoundUp(pfd_bytes + cap * sizeof(Entry), PageSize());
  PW_ASSIGN_OR_RETURN(void* m, env_->Mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  char* base = static_cast<char*>(m);
  auto* pfds = reinterpret_cast<struct pollfd*>(base);
  auto* ents = reinterpret_cast<Entry*>(base + pfd_bytes);
  for (size_t i = 0; i < cap; ++i) new (&ents[i]) Entry();
  if (map_ != nullptr) {
    // Keep the revents of an iteration in progress (a source added from a
    // callback may grow the storage while the poll results are being read).
    std::memcpy(pfds, pfds_, (capacity_ + 1) * sizeof(struct pollfd));
    std::memcpy(static_cast<void*>(ents), entries_, count_ * sizeof(Entry));
    env_->Munmap(map_, map_len_).IgnoreError();  // ours, unused from now on
  }
  map_ = m;
  map_len_ = len;
  capacity_ = cap;
  pfds_ = pfds;
  entries_ = ents;
  return Status::Ok();
}

Status UffdLoop::Reserve(size_t entries) { return Grow(entries); }

size_t UffdLoop::sources() const {
  size_t n = 0;
  for (size_t i = 0; i < count_; ++i) n += entries_[i].uffd && !entries_[i].removed;
  return n;
}

Status UffdLoop::AddUffd(int fd, uint64_t tag) {
  PW_RETURN_IF_ERROR(Grow(count_ + 1).WithContext("UffdLoop: adding a userfaultfd"));
  entries_[count_++] = Entry{fd, POLLIN, /*uffd=*/true, /*removed=*/false, tag};
  return Status::Ok();
}

void UffdLoop::RemoveUffd(uint64_t tag) {
  for (size_t i = 0; i < count_; ++i) {
    if (entries_[i].uffd && !entries_[i].removed && entries_[i].tag == tag) {
      entries_[i].removed = true;
      dirty_ = true;
    }
  }
}

Status UffdLoop::Watch(int fd, short events) {
  PW_RETURN_IF_ERROR(Grow(count_ + 1).WithContext("UffdLoop: watching a descriptor"));
  entries_[count_++] = Entry{fd, events, /*uffd=*/false, /*removed=*/false, 0};
  return Status::Ok();
}

void UffdLoop::Unwatch(int fd) {
  for (size_t i = 0; i < count_; ++i) {
    if (!entries_[i].uffd && !entries_[i].removed && entries_[i].fd == fd) {
      entries_[i].removed = true;
      dirty_ = true;
    }
  }
}

void UffdLoop::Compact() {
  if (!dirty_) return;
  size_t out = 0;
  for (size_t i = 0; i < count_; ++i) {
    if (!entries_[i].removed) entries_[out++] = entries_[i];
  }
  count_ = out;
  dirty_ = false;
}

void UffdLoop::Wake() {
  // Cannot fail for a valid eventfd far from its counter's limit.
  (void)eventfd_write(wake_fd_, 1);
}

void UffdLoop::Stop() {
  stop_.store(true, std::memory_order_release);
  Wake();
}

std::vector<PageRange> UffdLoop::memory() const {
  const uint64_t poll_set = reinterpret_cast<uint64_t>(map_);
  const uint64_t events = reinterpret_cast<uint64_t>(events_map_);
  return {{poll_set, poll_set + map_len_}, {events, events + events_len_}};
}

size_t UffdLoop::ReadSource(size_t index, UffdHandler* handler) {
  const uint64_t tag = entries_[index].tag;
  const int fd = entries_[index].fd;
  handler->BeforeRead(tag);
  size_t total = 0;
  Status error;
  // Bounded: a flood of faults on one source cannot starve the others;
  // what is left keeps the fd readable for the next iteration.
  for (int round = 0; round < options_.max_rounds; ++round) {
    if (entries_[index].removed) break;  // the handler gave it up meanwhile
    Result<size_t> n = ReadBatch(env_, fd, tag, handler, events_, options_.batch);
    if (!n.ok()) {
      error = n.status().WithContext("reading userfaultfd " + std::to_string(fd));
      break;
    }
    total += *n;
    if (*n < options_.batch) break;
  }
  handler->AfterRead(tag, total);
  if (!error.ok()) handler->OnReadError(tag, error);
  return total;
}

Result<bool> UffdLoop::Iterate(UffdHandler* handler, Duration timeout) {
  Compact();
  pfds_[0] = {wake_fd_, POLLIN, 0};
  const size_t polled = count_;
  for (size_t i = 0; i < polled; ++i) pfds_[i + 1] = {entries_[i].fd, entries_[i].events, 0};
  PW_ASSIGN_OR_RETURN(int ready, env_->Poll(pfds_, polled + 1, PollTimeoutMs(timeout)));
  if (ready == 0) {
    handler->OnIdle();
    return false;
  }
  if (pfds_[0].revents & POLLIN) {
    eventfd_t v;
    (void)eventfd_read(wake_fd_, &v);  // EAGAIN: another reader got it; same meaning
    handler->OnWake();
  }
  bool read_any = false;
  for (size_t i = 0; i < polled; ++i) {
    // (pfds_ may have moved if a callback grew the storage: re-read it.)
    const short revents = pfds_[i + 1].revents;
    if (revents == 0 || entries_[i].removed) continue;
    if (!entries_[i].uffd) {
      handler->OnWatched(entries_[i].fd, revents);
      continue;
    }
    if (revents & (POLLERR | POLLNVAL)) {
      handler->OnReadError(
          entries_[i].tag,
          Status::IoError("poll reported an error on userfaultfd " +
                          std::to_string(entries_[i].fd) + " (closed or invalid descriptor)"));
      continue;
    }
    if ((revents & POLLIN) && ReadSource(i, handler) > 0) read_any = true;
  }
  return read_any;
}

void UffdLoop::DrainAll(UffdHandler* handler) {
  for (;;) {
    Result<bool> more = Iterate(handler, Duration::zero());
    if (!more.ok() || !*more) return;
  }
}

Result<bool> UffdLoop::RunOnce(UffdHandler* handler, Duration timeout) {
  if (!stopping()) {
    Duration t = timeout;
    if (!handler->BeforePoll(&t)) return false;
    if (!stopping()) {
      PW_RETURN_IF_ERROR(Iterate(handler, std::min(t, timeout)).status());
      if (!stopping()) return true;
    }
  }
  if (options_.drain_on_stop) DrainAll(handler);
  return false;
}

Status UffdLoop::Run(UffdHandler* handler) {
  for (;;) {
    PW_ASSIGN_OR_RETURN(bool more, RunOnce(handler, kNoTimeout));
    if (!more) return Status::Ok();
  }
}

}  // namespace pagewise::sys
