// DropEvents (drop_events.h): the uffd-wp-async tracker's userfaultfd for
// memory whose drops only UFFD_EVENT_REMOVE reveals, and its reader thread.
#include "track/drop_events.h"

#include <array>
#include <cerrno>
#include <utility>

#include "pagewise/probe.h"
#include "sys/process.h"

namespace pagewise::track_internal {

// Locks the reader's mutex around each batch (BeforeRead/AfterRead) and
// passes REMOVE ranges to the sink. Only REMOVE events and (never, under
// WP_ASYNC) write-protect faults can arrive on this userfaultfd.
class DropEvents::Handler final : public sys::UffdHandler {
 public:
  Handler(std::mutex* mu, Sink sink) : mu_(mu), sink_(std::move(sink)) {}
  void OnRemove(uint64_t, const UffdEvent& e) override { sink_(e.start, e.end); }
  void BeforeRead(uint64_t) override { mu_->lock(); }
  void AfterRead(uint64_t, size_t) override { mu_->unlock(); }
  // A failed read leaves the messages queued; the next poll retries.
  void OnReadError(uint64_t, const Status&) override {}

 private:
  std::mutex* const mu_;
  const Sink sink_;
};

Result<std::unique_ptr<DropEvents>> DropEvents::Start(Env* env, Sink sink) {
  using namespace uffd_feature;
  sys::Userfaultfd::Options o;
  o.required_features = kPagefaultFlagWp | kWpAsync | kWpUnpopulated | kEventRemove;
  o.optional_features = kWpHugetlbfsShmem;
  o.env = env;
  Result<sys::Userfaultfd> uffd = sys::Userfaultfd::Open(o);
  if (!uffd.ok()) {
    return uffd.status().WithContext(
        "uffd-wp-async: the userfaultfd that reports drops of shared, hugetlbfs and file-backed "
        "memory (UFFD_FEATURE_EVENT_REMOVE)");
  }
  sys::UffdLoop::Options lo;
  lo.batch = 16;
  lo.capacity = 1;
  PW_ASSIGN_OR_RETURN(std::unique_ptr<sys::UffdLoop> loop, sys::UffdLoop::Create(env, lo));
  PW_RETURN_IF_ERROR(loop->AddUffd(uffd->fd(), 0));
  std::unique_ptr<DropEvents> d(
      new DropEvents(env, std::move(uffd).value(), std::move(loop), std::move(sink)));
  d->thread_ = std::make_unique<std::thread>([p = d.get()] { p->Run(); });
  return d;
}

DropEvents::DropEvents(Env* env, sys::Userfaultfd uffd, std::unique_ptr<sys::UffdLoop> loop,
                       Sink sink)
    : env_(env),
      uffd_(std::move(uffd)),
      loop_(std::move(loop)),
      handler_(std::make_unique<Handler>(&read_mu_, std::move(sink))),
      pid_(sys::SelfPid()) {}

DropEvents::~DropEvents() {
  if (sys::SelfPid() != pid_) {
    // A forked child has no reader thread: forget the handle (joining or
    // detaching a thread of another process is undefined). The descriptors
    // are this process's copies; closing them leaves the parent's alone.
    (void)thread_.release();  // intentional leak: no thread to join here
    return;
  }
  loop_->Stop();
  if (thread_) thread_->join();
}

void DropEvents::Run() {
  while (!loop_->stopping()) {
    // A failing poll is transient (EINTR, ENOMEM): try again.
    (void)loop_->Run(handler_.get());
  }
}

Status DropEvents::Sync() {
  std::lock_guard<std::mutex> lock(read_mu_);
  std::array<UffdEvent, 16> buffer;
  struct Direct final : sys::UffdHandler {
    Handler* h;
    explicit Direct(Handler* handler) : h(handler) {}
    void OnRemove(uint64_t tag, const UffdEvent& e) override { h->OnRemove(tag, e); }
  } direct(handler_.get());  // no BeforeRead/AfterRead: we hold the mutex
  Result<size_t> n = sys::DrainUffd(env_, uffd_.fd(), 0, &direct, buffer.data(), buffer.size());
  // EAGAIN: nothing pending (the reader may have taken it; we hold its mutex,
  // so whatever it read already went to the sink).
  if (!n.ok() && n.status().err() != EAGAIN) {
    return n.status().WithContext("uffd-wp-async: reading drop events");
  }
  return Status::Ok();
}

Status DropEvents::WriteProtect(uint64_t start, uint64_t len) {
  // EAGAIN means a REMOVE event is pending on this userfaultfd (the kernel's
  // mmap_changing): read it, then retry. The madvise thread clears the
  // state once it has been woken, so after a few fast retries we give it
  // the CPU (a 1 ms poll: this machine class may have a single free core).
  for (int attempt = 0;; ++attempt) {
    Status s = uffd_.WriteProtect(start, len, /*wp=*/true);
    if (s.ok() || s.err() != EAGAIN) return s;
    PW_RETURN_IF_ERROR(Sync());
    if (attempt >= 8) (void)env_->Poll(nullptr, 0, 1);
  }
}

}  // namespace pagewise::track_internal
