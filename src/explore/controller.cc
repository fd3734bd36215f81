// Controller: parking, releasing, and deciding when the process is quiet.
#include "explore/controller.h"

#include <chrono>
#include <cstring>
#include <map>
#include <utility>

#include "base/clock.h"
#include "sys/task.h"

namespace pagewise::explore {
namespace {

// Kernel functions a thread sleeps in when it waits for another actor (or
// for the controller): a lock or condition variable (futex), poll, a
// userfaultfd fault or event, a child. A thread asleep anywhere else (a
// semaphore of the mm, memory reclaim) will go on by itself: wait for it.
bool BlockingWchan(const char* w) {
  static const char* const kPrefixes[] = {"futex_",         "poll_schedule_timeout",
                                          "do_poll",        "do_select",
                                          "ep_poll",        "handle_userfault",
                                          "userfaultfd_",   "do_wait",
                                          "pipe_read",      "pipe_write",
                                          "unix_stream_",   "wait_woken",
                                          "do_sigtimedwait"};
  for (const char* p : kPrefixes) {
    if (std::strncmp(w, p, std::strlen(p)) == 0) return true;
  }
  return false;
}

constexpr int64_t kSampleNs = 100 * 1000;  // between two looks at /proc
// How long the process may take to settle after a step. Generous: the
// machine may be shared and loaded; a correct run settles in microseconds.
constexpr uint64_t kPatienceNs = 30ull * 1000 * 1000 * 1000;
// A thread asleep in an unknown kernel function for this long, without
// running, counts as blocked too.
constexpr uint64_t kUnknownSleepNs = 200ull * 1000 * 1000;

}  // namespace

Controller::Controller(std::set<std::string> stops) : stops_(std::move(stops)) {}

Controller::~Controller() {
  FreeRun();
  for (auto& a : actors_) {
    if (a->thread.joinable()) a->thread.join();
  }
  Detach();
}

int Controller::StartActor(std::unique_ptr<Actor> a) {
  Actor* raw = a.get();
  int id;
  {
    std::lock_guard<std::mutex> lk(mu_);
    id = static_cast<int>(actors_.size());
    actors_.push_back(std::move(a));
  }
  raw->thread = std::thread([this, raw] { ProgramMain(raw); });
  return id;
}

int Controller::AddProgram(const std::string& name, std::vector<ProgramStep> steps) {
  auto a = std::make_unique<Actor>();
  a->name = name;
  a->program = true;
  a->steps = std::move(steps);
  return StartActor(std::move(a));
}

int Controller::AddWorker(const std::string& name, std::function<std::optional<std::string>()> next,
                          std::function<void()> run) {
  auto a = std::make_unique<Actor>();
  a->name = name;
  a->program = true;
  a->worker = true;
  a->next_fn = std::move(next);
  a->run_fn = std::move(run);
  return StartActor(std::move(a));
}

void Controller::Attach() {
  attached_ = true;
  pause::Attach(this);
}

void Controller::Detach() {
  if (!attached_) return;
  attached_ = false;
  pause::Detach();
}

void Controller::Bump() {
  progress_.fetch_add(1, std::memory_order_acq_rel);
  sys::FutexWakeAll(&progress_, false);
}

void Controller::ProgramMain(Actor* a) {
  a->tid.store(sys::ThreadId());
  if (a->worker) {
    for (;;) {
      Park(a, nullptr);
      if (free_.load(std::memory_order_acquire)) break;
      a->run_fn();
    }
    a->phase.store(kDone);
    Bump();
    return;
  }
  for (size_t i = 0; i < a->steps.size(); ++i) {
    a->next.store(i);
    if (!free_.load()) Park(a, nullptr);  // before the step
    a->steps[i].run();
  }
  a->next.store(a->steps.size());
  a->phase.store(kDone);
  Bump();
}

Controller::Actor* Controller::FindByTid(pid_t tid) const {
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto& a : actors_) {
    if (a->tid.load() == tid) return a.get();
  }
  return nullptr;
}

Controller::Actor* Controller::Register(pid_t tid, const char* point) {
  std::string role(point);
  role.resize(role.size() - std::strlen(".start"));
  auto a = std::make_unique<Actor>();
  a->tid.store(tid);
  Actor* raw = a.get();
  std::lock_guard<std::mutex> lk(mu_);
  int same = 0;
  for (const auto& o : actors_) {
    if (o->name == role || o->name.rfind(role + "#", 0) == 0) ++same;
  }
  a->name = same == 0 ? role : role + "#" + std::to_string(same + 1);
  actors_.push_back(std::move(a));
  return raw;
}

void Controller::Reached(const char* point) {
  if (free_.load(std::memory_order_acquire)) return;
  const pid_t tid = sys::ThreadId();
  Actor* a = FindByTid(tid);
  if (a == nullptr) {
    const size_t n = std::strlen(point);
    const size_t k = std::strlen(".start");
    if (n <= k || std::strcmp(point + n - k, ".start") != 0) return;  // not ours
    a = Register(tid, point);
  } else if (stops_.find(point) == stops_.end()) {
    return;
  }
  Park(a, point);
}

void Controller::Park(Actor* a, const char* point) {
  const uint32_t g = a->go.load(std::memory_order_acquire);
  a->point.store(point);
  a->phase.store(kParked, std::memory_order_release);
  Bump();
  while (!free_.load(std::memory_order_acquire) && a->go.load(std::memory_order_acquire) == g) {
    sys::FutexWait(&a->go, g, -1, false);
  }
  a->acked.store(a->go.load(std::memory_order_acquire), std::memory_order_release);
}

Status Controller::WaitQuiet() {
  struct Sample {
    uint64_t cpu_ns;
    std::string wchan;
    bool operator==(const Sample&) const = default;
  };
  const uint64_t deadline = NowNs() + kPatienceNs;
  std::map<pid_t, Sample> prev;
  uint64_t stable_since = 0;
  for (;;) {
    const uint32_t seq = progress_.load(std::memory_order_acquire);
    bool all = true;
    bool unknown = false;
    std::map<pid_t, Sample> now;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (const auto& a : actors_) {
        const uint32_t ph = a->phase.load(std::memory_order_acquire);
        if (ph != kRunning) continue;
        if (a->acked.load() != a->go.load() || a->tid.load() == 0) {
          all = false;  // released but not awake yet, or not started
          break;
        }
        const sys::ThreadSched t = sys::ReadThreadSched(a->tid.load());
        if (!t.exists) continue;  // the thread ended (its work is over)
        if (!t.sleeping()) {
          all = false;
          break;
        }
        if (!BlockingWchan(t.wchan)) unknown = true;
        now[a->tid.load()] = {t.cpu_ns, t.wchan};
      }
    }
    if (all) {
      if (now.empty()) return Status::Ok();
      if (now == prev) {
        if (!unknown || NowNs() - stable_since >= kUnknownSleepNs) return Status::Ok();
      } else {
        prev = std::move(now);
        stable_since = NowNs();
      }
    } else {
      prev.clear();
    }
    if (NowNs() > deadline) {
      return Status(Code::kTimeout, 0,
                    "the process did not settle after a step (a thread keeps running without "
                    "reaching a pause point: a livelock)");
    }
    sys::FutexWait(&progress_, seq, kSampleNs, false);
  }
}

Status Controller::Prologue(const std::vector<std::string>& release,
                            const std::vector<std::string>& expect) {
  const uint64_t deadline = NowNs() + kPatienceNs;
  auto find = [&](const std::string& role) -> int {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = 0; i < actors_.size(); ++i) {
      if (actors_[i]->name == role) return static_cast<int>(i);
    }
    return -1;
  };
  auto wait_for = [&](const std::string& role) -> Result<int> {
    for (;;) {
      const uint32_t seq = progress_.load();
      const int id = find(role);
      if (id >= 0) return id;
      if (NowNs() > deadline) {
        return Status::Internal("explore: thread role '" + role + "' never reached " + role +
                                ".start");
      }
      sys::FutexWait(&progress_, seq, kSampleNs, false);
    }
  };
  for (const std::string& role : release) {
    PW_ASSIGN_OR_RETURN(int id, wait_for(role));
    PW_RETURN_IF_ERROR(WaitQuiet());
    PW_RETURN_IF_ERROR(Step(id));
  }
  for (const std::string& role : expect) {
    PW_ASSIGN_OR_RETURN(int id, wait_for(role));
    (void)id;
  }
  PW_RETURN_IF_ERROR(WaitQuiet());
  trace_.clear();  // the schedule starts here
  return Status::Ok();
}

std::vector<int> Controller::Enabled() {
  std::vector<Actor*> all;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& a : actors_) all.push_back(a.get());
  }
  std::vector<int> out;
  for (size_t i = 0; i < all.size(); ++i) {
    Actor* a = all[i];
    if (a->phase.load() != kParked) continue;
    if (a->worker && a->point.load() == nullptr) {
      // Asked here, outside mu_: the worker is parked, its state is still.
      std::optional<std::string> label = a->next_fn();
      if (!label) continue;
      a->label = *label;
    }
    out.push_back(static_cast<int>(i));
  }
  return out;
}

std::vector<std::string> Controller::Snapshot() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < actors(); ++i) out.push_back(Where(static_cast<int>(i)));
  return out;
}

Status Controller::Step(int actor) {
  Actor* a;
  {
    std::lock_guard<std::mutex> lk(mu_);
    a = actors_.at(static_cast<size_t>(actor)).get();
  }
  if (a->phase.load() != kParked) {
    return Status::Internal("explore: actor " + a->name + " is not parked");
  }
  const std::vector<std::string> before = Snapshot();
  a->phase.store(kRunning, std::memory_order_release);
  a->go.fetch_add(1, std::memory_order_acq_rel);
  sys::FutexWakeAll(&a->go, false);
  Status st = WaitQuiet();
  const std::vector<std::string> after = Snapshot();
  if (a->worker && a->phase.load() == kParked) a->label.clear();
  std::string line = a->name + ": " + before[static_cast<size_t>(actor)] + " -> " +
                     after[static_cast<size_t>(actor)];
  for (size_t i = 0; i < after.size(); ++i) {
    if (static_cast<int>(i) == actor) continue;
    if (i >= before.size()) {
      line += "; " + name(static_cast<int>(i)) + " started: " + after[i];
    } else if (before[i] != after[i]) {
      line += "; " + name(static_cast<int>(i)) + ": -> " + after[i];
    }
  }
  trace_.push_back(line);
  return st;
}

void Controller::FreeRun() {
  if (free_.exchange(true)) return;
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto& a : actors_) {
    if (a->phase.load() == kParked) a->phase.store(kRunning);
    a->go.fetch_add(1);
    sys::FutexWakeAll(&a->go, false);
  }
}

bool Controller::WaitProgramsDone(int64_t timeout_ns) {
  const uint64_t deadline = NowNs() + static_cast<uint64_t>(timeout_ns);
  for (;;) {
    const uint32_t seq = progress_.load();
    bool done = true;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (const auto& a : actors_) {
        if (a->program && a->phase.load() != kDone) done = false;
      }
    }
    if (done) return true;
    const uint64_t now = NowNs();
    if (now >= deadline) return false;
    sys::FutexWait(&progress_, seq, static_cast<int64_t>(deadline - now), false);
  }
}

std::string Controller::Unfinished() const {
  std::string out;
  for (size_t i = 0; i < actors(); ++i) {
    const Actor& a = *actors_[i];
    if (!a.program || a.phase.load() == kDone) continue;
    if (!out.empty()) out += ", ";
    out += a.name + " (" + Where(static_cast<int>(i)) + ")";
  }
  return out;
}

const std::string& Controller::name(int actor) const {
  std::lock_guard<std::mutex> lk(mu_);
  return actors_.at(static_cast<size_t>(actor))->name;
}

size_t Controller::actors() const {
  std::lock_guard<std::mutex> lk(mu_);
  return actors_.size();
}

std::string Controller::Where(int actor) const {
  const Actor* a;
  {
    std::lock_guard<std::mutex> lk(mu_);
    a = actors_.at(static_cast<size_t>(actor)).get();
  }
  switch (a->phase.load()) {
    case kDone:
      return "done";
    case kParked: {
      const char* point = a->point.load();
      if (!a->program) return std::string("at ") + point;
      if (a->worker) {
        if (point != nullptr) return std::string("at ") + point;
        return a->label.empty() ? "idle" : "before " + a->label;
      }
      const std::string& label = a->steps[a->next.load()].label;
      if (point == nullptr) return "before " + label;
      return "in " + label + ", at " + point;
    }
    default: {
      if (a->tid.load() == 0) return "starting";
      const sys::ThreadSched t = sys::ReadThreadSched(a->tid.load());
      if (!t.exists) return "exited";
      if (t.sleeping()) {
        std::string w = t.wchan;
        if (a->worker) return a->label + ", blocked in " + w;
        if (a->program && a->next.load() < a->steps.size()) {
          return "in " + a->steps[a->next.load()].label + ", blocked in " + w;
        }
        return "blocked in " + w;
      }
      return "running";
    }
  }
}

}  // namespace pagewise::explore
