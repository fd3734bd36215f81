// RunCriuLazyPages: the lazy-pages daemon side of `criu restore
// --lazy-pages` (see include/pagewise/criu.h and docs/criu.md).
//
// One thread (the caller's) speaks the protocol and supervises; each task
// gets a TaskEngine as soon as its userfaultfd arrives. The supervisor
// wakes on the restore connection, and at least every kTickMs to look at
// the engines (a task that exited leaves no event behind).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "criu/dump.h"
#include "criu/remote_source.h"
#include "criu/sources.h"
#include "criu/task_engine.h"
#include "pagewise/criu.h"
#include "sys/process.h"

namespace pagewise {
namespace {

constexpr uint32_t kRestoreFinished = 0x52535446;  // "RSTF", criu/uffd.c
constexpr int kTickMs = 20;
constexpr const char* kSocketName = "lazy-pages.socket";

using Clock = std::chrono::steady_clock;

struct Task {
  CriuTaskReport report;
  std::unique_ptr<criu::TaskEngine> engine;
  int pidfd = -1;  // readable once the task exited
  bool finished = false;
};

class Daemon {
 public:
  explicit Daemon(const CriuLazyPagesOptions& o) : o_(o), env_(Env::Default()) {}

  ~Daemon() {
    // A task whose memory is not all in place must not outlive our
    // userfaultfd (its missing pages would read as zero): kill it first.
    for (auto& [pid, t] : tasks_) {
      if (t.engine && !t.engine->resident()) KillTask(&t, "the daemon is stopping");
      if (t.engine) t.engine->Stop();
      if (t.pidfd >= 0) sys::CloseFd(t.pidfd).IgnoreError();
    }
    if (conn_ >= 0) env_->Close(conn_).IgnoreError();
    if (sig_fd_ >= 0) sys::CloseFd(sig_fd_).IgnoreError();
    if (listen_ >= 0) env_->Close(listen_).IgnoreError();
    if (!socket_path_.empty()) env_->Unlink(socket_path_).IgnoreError();
  }

  Result<CriuLazyPagesReport> Run() {
    // SIGINT/SIGTERM must not kill us with our userfaultfds: the tasks'
    // missing pages would read as zeros. They end the restore loudly.
    PW_RETURN_IF_ERROR(sys::BlockTerminationSignals());
    PW_ASSIGN_OR_RETURN(sig_fd_, sys::TerminationSignalFd());
    PW_RETURN_IF_ERROR(OpenSource());
    PW_RETURN_IF_ERROR(Listen());
    Log("listening on " + socket_path_ + "; pages from " + source_->Describe());
    for (;;) {
      struct pollfd p[2] = {{listen_, POLLIN, 0}, {sig_fd_, POLLIN, 0}};
      PW_RETURN_IF_ERROR(env_->Poll(p, 2, -1).status());
      if (p[1].revents & POLLIN)
        return Status::FailedPrecondition("stopped by a signal before any restore connected");
      if (p[0].revents & POLLIN) break;
    }
    PW_ASSIGN_OR_RETURN(conn_, env_->Accept(listen_));
    env_->Close(listen_).IgnoreError();  // one restore per daemon, as criu lazy-pages
    listen_ = -1;
    start_ = Clock::now();
    Status st = Serve();
    report_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    for (auto& [pid, t] : tasks_) {
      if (t.engine) {
        t.report.stats = t.engine->stats();
        if (t.report.status.ok()) t.report.status = t.engine->status();
      }
    }
    if (st.ok()) st = SaveTrace();
    for (auto& [pid, t] : tasks_) report_.tasks.push_back(t.report);
    if (!st.ok()) return st;
    return report_;
  }

 private:
  void Log(const std::string& line) const {
    if (o_.log) o_.log(line);
  }

  Status OpenSource() {
    const bool local = o_.image.empty() && o_.page_server.empty();
    if (!o_.image.empty() && !o_.page_server.empty()) {
      return Status::InvalidArgument("give --image or --page-server, not both");
    }
    criu::CriuDump::OpenOptions oo;
    oo.data = local;
    PW_ASSIGN_OR_RETURN(dump_, criu::CriuDump::Open(o_.dump_dir, oo));
    if (local) {
      source_ = criu::DumpSource(dump_);
    } else if (!o_.image.empty()) {
      PW_ASSIGN_OR_RETURN(source_, criu::CheckedImageSource(o_.image, *dump_));
    } else {
      criu::RemoteSourceOptions ro;
      ro.timeout_ms = o_.network_timeout_ms;
      ro.on_failure = [this](const Status& why) { OnNetworkLoss(why); };
      PW_ASSIGN_OR_RETURN(source_, criu::ConnectRemoteSource(o_.page_server, *dump_, ro));
    }
    report_.source = source_->Describe();
    if (!o_.trace_path.empty()) {
      Result<WorkingSetTrace> tr = ReadTrace(o_.trace_path);
      if (tr.ok()) {
        if (tr->source_size != dump_->flat_size()) {
          return Status::InvalidArgument(o_.trace_path + " was recorded from another dump (" +
                                         std::to_string(tr->source_size) + " bytes, this one " +
                                         std::to_string(dump_->flat_size()) + ")");
        }
        for (const TraceEntry& e : tr->entries) prefetch_.push_back(e.offset);
      } else if (tr.status().code() != Code::kNotFound) {
        return tr.status();
      }
    }
    return Status::Ok();
  }

  Status Listen() {
    const std::string dir = o_.work_dir.empty() ? o_.dump_dir : o_.work_dir;
    socket_path_ = dir + "/" + kSocketName;
    Result<int> fd = env_->UnixListen(socket_path_, 4);
    if (!fd.ok()) {
      socket_path_.clear();
      return fd.status().WithContext("lazy-pages socket in " + dir);
    }
    listen_ = *fd;
    if (o_.status_fd >= 0) {
      const char zero = 0;
      Status st = sys::WriteAll(o_.status_fd, &zero, 1);
      sys::CloseFd(o_.status_fd).IgnoreError();  // as criu: written once, then closed
      PW_RETURN_IF_ERROR(st.WithContext("--status-fd"));
    }
    return Status::Ok();
  }

  // Reads exactly len bytes of the restore connection (*fd: a descriptor
  // that came with them, else -1).
  Status ReadExact(void* buf, size_t len, int* fd) {
    char* p = static_cast<char*>(buf);
    if (fd) *fd = -1;
    while (len > 0) {
      int got_fd = -1;
      PW_ASSIGN_OR_RETURN(size_t n, env_->RecvWithFd(conn_, p, len, &got_fd));
      if (got_fd >= 0) {
        if (fd && *fd < 0) {
          *fd = got_fd;
        } else {
          env_->Close(got_fd).IgnoreError();  // not part of the protocol
        }
      }
      if (n == 0) return Status::PeerGone("criu restore closed the lazy-pages connection");
      p += n;
      len -= n;
    }
    return Status::Ok();
  }

  // One message of the restore connection.
  Status ReadMessage() {
    int32_t word = 0;
    PW_RETURN_IF_ERROR(ReadExact(&word, sizeof(word), nullptr));
    if (static_cast<uint32_t>(word) == kRestoreFinished) {
      report_.restore_finished = true;
      Log("restore finished (end marker)");
      if (o_.background_fill) {
        for (auto& [pid, t] : tasks_) {
          if (t.engine) t.engine->EnableBackground();
        }
      }
      return Status::Ok();
    }
    if (word < 0) {
      report_.zombies++;
      Log("zombie " + std::to_string(-word));
      return Status::Ok();
    }
    const pid_t pid = word;
    const criu::DumpTask* dt = dump_->FindTask(static_cast<uint32_t>(pid));
    if (word == 0 || dt == nullptr) {
      return Status::InvalidArgument("criu restore sent pid " + std::to_string(word) +
                                     ", which is not a task of " + o_.dump_dir +
                                     " (is this the dump being restored?)");
    }
    if (tasks_.count(pid)) {
      return Status::InvalidArgument("criu restore sent pid " + std::to_string(pid) + " twice");
    }
    char one = 0;
    int uffd = -1;
    Status st = ReadExact(&one, 1, &uffd);
    Task& t = tasks_[pid];
    t.report.pid = pid;
    t.report.lazy_pages = dt->lazy_pages;
    if (!st.ok() || uffd < 0) {
      if (uffd >= 0) env_->Close(uffd).IgnoreError();
      t.report.status = Status::InvalidArgument(
          "task " + std::to_string(pid) + ": its userfaultfd did not arrive (" +
          (st.ok() ? std::string("the message after its pid carried no descriptor")
                   : st.ToString()) +
          "); it cannot be served");
      KillTask(&t, "its userfaultfd is missing");
      return t.report.status;
    }
    std::vector<criu::DumpRegion> lazy;
    std::set<uint64_t> mine;
    for (size_t i = dt->first_region; i < dt->first_region + dt->nregions; ++i) {
      const criu::DumpRegion& r = dump_->regions()[i];
      if (!r.lazy()) continue;
      lazy.push_back(r);
    }
    criu::TaskEngineOptions eo;
    eo.fault_window_pages = o_.fault_window_pages;
    eo.background_batch_pages = o_.background_batch_pages;
    eo.record_trace = !o_.trace_path.empty();
    for (uint64_t off : prefetch_) {
      for (const criu::DumpRegion& r : lazy) {
        if (off >= r.flat_offset && off < r.flat_offset + r.length) eo.prefetch.push_back(off);
      }
    }
    Result<std::unique_ptr<criu::TaskEngine>> e = criu::TaskEngine::Start(uffd, lazy, source_, eo);
    if (!e.ok()) {
      t.report.status = e.status().WithContext("task " + std::to_string(pid));
      KillTask(&t, "it cannot be served");
      return t.report.status;
    }
    t.engine = std::move(*e);
    {
      std::lock_guard<std::mutex> lk(pids_mu_);
      served_pids_.push_back(pid);
    }
    // A task that exits leaves no event on its userfaultfd: its pidfd says.
    Result<int> pidfd = sys::PidfdOpen(pid);
    if (pidfd.ok()) t.pidfd = *pidfd;
    Log("task " + std::to_string(pid) + ": serving " + std::to_string(dt->lazy_pages) +
        " lazy pages in " + std::to_string(lazy.size()) + " regions");
    return Status::Ok();
  }

  void KillTask(Task* t, const std::string& why) {
    if (t->report.killed) return;
    if (sys::KillProcess(t->report.pid, SIGKILL).ok()) {
      t->report.killed = true;
      Log("task " + std::to_string(t->report.pid) + " killed: " + why);
    }
  }

  // Called by the remote source (on an engine thread) when the page server
  // is lost.
  void OnNetworkLoss(const Status& why) {
    if (o_.on_loss == CriuLossPolicy::kKill) {
      // Before the engine learns of the failure (and poisons the page a
      // thread waits for): the tasks die by SIGKILL, not SIGBUS.
      std::lock_guard<std::mutex> lk(pids_mu_);
      for (pid_t pid : served_pids_) sys::KillProcess(pid, SIGKILL).IgnoreError();  // may be gone
    }
    Log("page server lost: " + why.ToString() +
        (o_.on_loss == CriuLossPolicy::kKill
             ? "; killing the tasks"
             : "; pages not yet restored raise SIGBUS when touched (never zeros)"));
    network_lost_ = true;
  }

  // Looks at every engine: finished tasks are reported; failures handled.
  bool AllDone() {
    bool all = true;
    for (auto& [pid, t] : tasks_) {
      if (t.finished || !t.engine) continue;
      const Status st = t.engine->status();
      if (!st.ok() && o_.on_loss == CriuLossPolicy::kKill) {
        if (network_lost_.load()) t.report.killed = true;  // by OnNetworkLoss
        KillTask(&t, st.ToString());
      }
      if (!t.engine->done()) {
        all = false;
        continue;
      }
      t.finished = true;
      const RestoreStats s = t.engine->stats();
      Log("task " + std::to_string(pid) + ": " + (t.engine->resident() ? "resident" : "gone") +
          " after " + std::to_string(s.resident_ns / 1e9) + " s (" +
          std::to_string(s.pages_demand) + " pages on demand, " +
          std::to_string(s.pages_background) + " in background, " + std::to_string(s.forks) +
          " forks, " + std::to_string(s.remaps) + " remaps, " + std::to_string(s.removes) +
          " removes, " + std::to_string(s.unmaps) + " unmaps)" +
          (st.ok() ? "" : "; error: " + st.ToString()));
    }
    return all;
  }

  Status Serve() {
    bool open = true;
    Status hangup;
    std::vector<struct pollfd> fds;
    std::vector<Task*> polled;
    for (;;) {
      if ((!open || report_.restore_finished) && AllDone()) break;
      fds.clear();
      polled.clear();
      fds.push_back({sig_fd_, POLLIN, 0});
      if (open && !report_.restore_finished) fds.push_back({conn_, POLLIN, 0});
      for (auto& [pid, t] : tasks_) {
        if (t.pidfd < 0) continue;
        fds.push_back({t.pidfd, POLLIN, 0});
        polled.push_back(&t);
      }
      PW_ASSIGN_OR_RETURN(int n, env_->Poll(fds.data(), fds.size(), kTickMs));
      (void)n;
      if (fds[0].revents & POLLIN) {
        // The destructor kills every task not yet resident.
        Log("stopped by a signal: killing the tasks whose memory is not all in place");
        return Status::FailedPrecondition("stopped by a signal before every task was resident");
      }
      const size_t first_task = fds.size() - polled.size();
      for (size_t i = 0; i < polled.size(); ++i) {
        if (!(fds[first_task + i].revents & POLLIN)) continue;
        Task* t = polled[i];
        sys::CloseFd(t->pidfd).IgnoreError();  // done with it
        t->pidfd = -1;
        Log("task " + std::to_string(t->report.pid) + " exited");
        // Children it forked may still need pages; dead spaces show up
        // as ESRCH once the filler tries them.
        if (t->engine) t->engine->EnableBackground();
      }
      if (first_task == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
        Status st = ReadMessage();
        if (st.code() == Code::kPeerGone) {
          open = false;
          if (!report_.restore_finished) {
            hangup = Status::PeerGone(
                "criu restore closed the lazy-pages connection before the end of the restore "
                "(the restore failed: see criu's log)");
            Log(hangup.message());
          }
        } else if (!st.ok()) {
          return st;
        }
      }
      if (open && !report_.restore_finished) AllDone();
    }
    return hangup;
  }

  Status SaveTrace() {
    if (o_.trace_path.empty()) return Status::Ok();
    WorkingSetTrace all;
    all.page_size = static_cast<uint32_t>(PageSize());
    all.source_size = dump_->flat_size();
    std::set<uint64_t> seen;
    for (auto& [pid, t] : tasks_) {
      if (!t.engine) continue;
      for (const TraceEntry& e : t.engine->trace().entries) {
        if (seen.insert(e.offset).second) all.entries.push_back(e);
      }
    }
    std::sort(all.entries.begin(), all.entries.end(),
              [](const TraceEntry& a, const TraceEntry& b) { return a.time_ns < b.time_ns; });
    if (all.entries.empty() && !prefetch_.empty()) return Status::Ok();  // keep the old one
    return WriteTrace(o_.trace_path, all).WithContext("--trace");
  }

  const CriuLazyPagesOptions& o_;
  Env* env_;
  std::shared_ptr<const criu::CriuDump> dump_;
  std::shared_ptr<const PageSource> source_;
  std::vector<uint64_t> prefetch_;
  std::string socket_path_;
  int listen_ = -1;
  int conn_ = -1;
  int sig_fd_ = -1;
  Clock::time_point start_;
  std::map<pid_t, Task> tasks_;
  std::atomic<bool> network_lost_{false};
  std::mutex pids_mu_;
  std::vector<pid_t> served_pids_;  // guarded by pids_mu_
  CriuLazyPagesReport report_;
};

}  // namespace

Result<CriuLazyPagesReport> RunCriuLazyPages(const CriuLazyPagesOptions& options) {
  if (options.dump_dir.empty()) return Status::InvalidArgument("no dump directory (-D)");
  Daemon d(options);
  return d.Run();
}

}  // namespace pagewise
