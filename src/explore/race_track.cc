// Tracker races: a program writing, mprotecting, dropping and forking
// tracked memory while a collector takes incremental snapshots with
// pagewise's real uffd-wp-async tracker (PAGEMAP_SCAN with
// PM_SCAN_WP_MATCHING: reading and re-arming a page is one step under the
// page-table lock), or, for the negative control, the two-step tracker.
//
// The collector keeps a replica the way an incremental snapshot does: the
// base copy taken at Track(), then after each collect the current bytes of
// every reported page. Every write stores a value never stored before, so
// after the next two collects (run once the schedule is over) the replica
// equals the memory exactly when no written page was missing from them.
#include <sys/mman.h>

#include <cstring>
#include <memory>

#include "explore/race.h"
#include "pagewise/region.h"
#include "pagewise/tracker.h"
#include "sys/env.h"
#include "sys/task.h"

namespace pagewise::explore {
namespace {

constexpr size_t kPages = 2;
constexpr size_t kMaxSteps = 40;

class TrackWorld {
 public:
  ~TrackWorld() {
    tracker_.reset();
    if (child_ > 0) {
      int ws = 0;
      (void)sys::ReapChild(child_, true, &ws);
    }
    if (region_ != nullptr) env_->Munmap(region_, kPages * ps_).IgnoreError();
  }

  Status Setup(pause::Variant v) {
    ps_ = PageSize();
    PW_ASSIGN_OR_RETURN(void* p, env_->Mmap(nullptr, kPages * ps_, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    region_ = static_cast<char*>(p);
    // Precise per-page state (no transparent huge page).
    env_->Madvise(region_, kPages * ps_, MADV_NOHUGEPAGE).IgnoreError();
    std::memset(region_, 0x11, kPages * ps_);
    TrackerOptions o;
    o.backend =
        v == pause::Variant::kTwoStepTracker ? TrackBackend::kTwoStep : TrackBackend::kUffdWpAsync;
    PW_ASSIGN_OR_RETURN(tracker_, Tracker::Create(o));
    PW_RETURN_IF_ERROR(tracker_->Track(region_, kPages * ps_));
    replica_.assign(region_, region_ + kPages * ps_);
    return Status::Ok();
  }

  // Program steps.
  void Write(size_t i) { std::memset(region_ + i * ps_, next_value_++, ps_); }
  void Protect(int prot) { env_->Mprotect(region_, kPages * ps_, prot).IgnoreError(); }
  void Drop(size_t i) { env_->Madvise(region_ + i * ps_, ps_, MADV_DONTNEED).IgnoreError(); }
  void Fork() {
    Result<pid_t> r = sys::Fork();
    if (r.ok() && *r == 0) sys::ExitChild(0);  // the child only has to exist
    if (r.ok()) child_ = *r;
  }
  // The collector's step: collect, then copy every reported page.
  void Collect() {
    std::vector<PageRange> written;
    Status s = tracker_->Collect(&written);
    const size_t k = ++collects_;
    if (!s.ok()) {
      errors_.push_back("collect#" + std::to_string(k) + ": " + s.ToString());
      return;
    }
    std::string pages;
    const uint64_t base = reinterpret_cast<uint64_t>(region_);
    for (const PageRange& r : written) {
      for (uint64_t a = r.start; a < r.end; a += ps_) {
        if (a < base || a >= base + kPages * ps_) continue;
        const size_t i = (a - base) / ps_;
        std::memcpy(replica_.data() + i * ps_, region_ + i * ps_, ps_);
        pages += (pages.empty() ? "p" : ", p") + std::to_string(i);
      }
    }
    log_.push_back("collect#" + std::to_string(k) + " reported " +
                   (pages.empty() ? std::string("nothing") : pages));
  }

  // After the schedule: the next two collects, then replica == memory.
  void Check(std::vector<std::string>* v) {
    Collect();
    Collect();
    v->insert(v->end(), errors_.begin(), errors_.end());
    for (size_t i = 0; i < kPages; ++i) {
      if (std::memcmp(replica_.data() + i * ps_, region_ + i * ps_, ps_) == 0) continue;
      v->push_back("lost write: p" + std::to_string(i) + " holds " +
                   std::to_string(static_cast<unsigned char>(region_[i * ps_])) +
                   " but the incremental snapshot has " +
                   std::to_string(static_cast<unsigned char>(replica_[i * ps_])) +
                   ": the write was in none of the next two collects");
    }
  }
  const std::vector<std::string>& log() const { return log_; }

 private:
  Env* env_ = Env::Default();
  size_t ps_ = 4096;
  char* region_ = nullptr;
  std::unique_ptr<Tracker> tracker_;
  std::vector<char> replica_;
  unsigned char next_value_ = 0x21;
  size_t collects_ = 0;
  pid_t child_ = -1;
  std::vector<std::string> errors_;
  std::vector<std::string> log_;
};

using Script = std::function<std::vector<ProgramStep>(TrackWorld&)>;

RaceDef TrackRace(const char* name, const char* summary, Script program) {
  return {name,
          summary,
          {pause::Variant::kTwoStepTracker},
          -1,
          500,
          [program](Schedule* s, pause::Variant v, Outcome* out) -> Status {
            TrackWorld w;
            PW_RETURN_IF_ERROR(w.Setup(v));
            Controller c({});
            c.AddProgram("collector", {{"collect + copy", [&w] { w.Collect(); }},
                                       {"collect + copy", [&w] { w.Collect(); }}});
            c.AddProgram("program", program(w));
            PW_RETURN_IF_ERROR(c.Prologue({}, {}));
            PW_RETURN_IF_ERROR(Drive(c, s, kMaxSteps, out));
            c.FreeRun();
            if (!c.WaitProgramsDone(10ll * 1000 * 1000 * 1000)) {
              out->violations.push_back("hang: " + c.Unfinished());
              return Status::Ok();
            }
            w.Check(&out->violations);
            for (const std::string& l : w.log()) out->notes.push_back("tracker: " + l);
            return Status::Ok();
          }};
}

}  // namespace

void AddTrackRaces(std::vector<RaceDef>* out) {
  out->push_back(TrackRace("scan-writes",
                           "PAGEMAP_SCAN with WP_MATCHING (collect) against writes to the pages "
                           "it reports and re-arms",
                           [](TrackWorld& w) -> std::vector<ProgramStep> {
                             return {{"write p0", [&w] { w.Write(0); }},
                                     {"write p1", [&w] { w.Write(1); }},
                                     {"write p0", [&w] { w.Write(0); }}};
                           }));
  out->push_back(
      TrackRace("scan-mprotect", "collects against writes around mprotect(READ) and back",
                [](TrackWorld& w) -> std::vector<ProgramStep> {
                  return {{"write p0", [&w] { w.Write(0); }},
                          {"mprotect(READ)", [&w] { w.Protect(PROT_READ); }},
                          {"mprotect(READ|WRITE)", [&w] { w.Protect(PROT_READ | PROT_WRITE); }},
                          {"write p0", [&w] { w.Write(0); }}};
                }));
  out->push_back(TrackRace("scan-dontneed",
                           "collects against writes and MADV_DONTNEED of a written page",
                           [](TrackWorld& w) -> std::vector<ProgramStep> {
                             return {{"write p0", [&w] { w.Write(0); }},
                                     {"madvise(p0, DONTNEED)", [&w] { w.Drop(0); }},
                                     {"write p1", [&w] { w.Write(1); }}};
                           }));
  out->push_back(TrackRace("scan-fork",
                           "collects against writes before and after a fork(2) (copy-on-write "
                           "of write-protected pages)",
                           [](TrackWorld& w) -> std::vector<ProgramStep> {
                             return {{"write p0", [&w] { w.Write(0); }},
                                     {"fork()", [&w] { w.Fork(); }},
                                     {"write p0", [&w] { w.Write(0); }}};
                           }));
  out->push_back(
      TrackRace("uffd-wp-mprotect",
                "uffd-wp protection against mprotect: a page made read-only and "
                "writable again between collects keeps its write-protect bit",
                [](TrackWorld& w) -> std::vector<ProgramStep> {
                  return {{"write p1", [&w] { w.Write(1); }},
                          {"mprotect(READ)", [&w] { w.Protect(PROT_READ); }},
                          {"mprotect(READ|WRITE)", [&w] { w.Protect(PROT_READ | PROT_WRITE); }},
                          {"write p1", [&w] { w.Write(1); }}};
                }));
}

}  // namespace pagewise::explore
