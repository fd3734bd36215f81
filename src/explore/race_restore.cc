// Restore races: a program's fork / mremap / madvise / munmap / faults
// against pagewise's restore engine (restore::Engine: its loop thread and
// background filler, UffdWorld with options.engine) serving its registered
// memory with COPY and ZEROPAGE. fork-move, which the engine never does
// (it issues no UFFDIO_MOVE), runs against the explorer's reference
// monitor, which follows the engine's rules with MOVE batches.
#include <sys/mman.h>

#include "explore/race.h"
#include "explore/uffd_world.h"

namespace pagewise::explore {
namespace {

using Programs = std::vector<std::pair<std::string, std::vector<ProgramStep>>>;
using Check = std::function<void(const UffdWorld&, std::vector<std::string>*)>;

// Longest schedule before a run counts as a livelock.
constexpr size_t kMaxSteps = 60;

// One schedule: fresh world, the workers and the program's actors, the
// schedule's steps, then the final phase and the race's checks.
Status RunWorld(Schedule* s, pause::Variant v, Outcome* out, const UffdWorldOptions& o,
                const std::function<Programs(UffdWorld&)>& programs, const Check& check) {
  UffdWorld w(v);
  PW_RETURN_IF_ERROR(w.Setup(o));
  Controller c({"engine.loop.read", "engine.fill.ioctl", "engine.drain.read"});
  w.AddWorkers(c);
  for (auto& [name, steps] : programs(w)) c.AddProgram(name, std::move(steps));
  Status st = w.Begin(c);
  if (st.ok()) st = Drive(c, s, kMaxSteps, out);
  w.Finish(c, &out->violations);  // also after an error: it frees and stops every thread
  PW_RETURN_IF_ERROR(st);
  check(w, &out->violations);
  for (const std::string& l : w.log()) out->notes.push_back("monitor: " + l);
  return Status::Ok();
}

void ExpectAll(const UffdWorld& w, size_t pages, const char* what, bool child,
               std::vector<std::string>* v) {
  for (size_t i = 0; i < pages; ++i) {
    w.ExpectParent(i, false, what, v);
    if (child) w.ExpectChild(i, what, v);
  }
}

RaceDef ForkRace(const char* name, const char* summary, FillOp op) {
  // MOVE: the reference monitor (the engine issues no UFFDIO_MOVE), where
  // the two monitor-rule controls are explored too.
  std::vector<pause::Variant> variants;
  if (op == FillOp::kMove) {
    variants = {pause::Variant::kForkChildFromParentState, pause::Variant::kEagainWithoutDrain};
  }
  return {name, summary, variants, -1, 500, [op](Schedule* s, pause::Variant v, Outcome* out) {
            UffdWorldOptions o;
            o.engine = op != FillOp::kMove;
            o.fill = op;
            o.batch_pages = 1;
            if (op == FillOp::kZeropage) o.zero_pages = {0, 1};
            return RunWorld(
                s, v, out, o,
                [](UffdWorld& w) -> Programs {
                  return {{"program", {{"fork()", [&w] { w.Fork(); }}}}};
                },
                [](const UffdWorld& w, std::vector<std::string>* e) {
                  ExpectAll(w, 2, "after fork, parent and child read the source", true, e);
                });
          }};
}

RaceDef RemapRace(bool dontunmap) {
  return {dontunmap ? "mremap-dontunmap-copy" : "mremap-copy",
          dontunmap ? "mremap(MREMAP_DONTUNMAP) of the region while the filler copies into it"
                    : "mremap of the region while the filler copies into it",
          {},
          -1,
          500,
          [dontunmap](Schedule* s, pause::Variant v, Outcome* out) {
            UffdWorldOptions o;
            o.engine = true;
            o.batch_pages = 1;
            o.reserve_target = true;
            return RunWorld(
                s, v, out, o,
                [dontunmap](UffdWorld& w) -> Programs {
                  return {{"program",
                           {{dontunmap ? "mremap(DONTUNMAP)" : "mremap()",
                             [&w, dontunmap] { w.Remap(dontunmap); }}}}};
                },
                [](const UffdWorld& w, std::vector<std::string>* e) {
                  ExpectAll(w, 2, "a moved range keeps its content", false, e);
                  for (size_t i = 0; i < 2; ++i) w.ExpectOldZero(i, e);
                });
          }};
}

Status RunDontneed(Schedule* s, pause::Variant v, Outcome* out) {
  UffdWorldOptions o;
  o.engine = true;
  o.batch_pages = 1;
  return RunWorld(
      s, v, out, o,
      [](UffdWorld& w) -> Programs {
        return {
            {"program", {{"madvise(p0..p1, DONTNEED)", [&w] { w.Advise(0, 2, MADV_DONTNEED); }}}}};
      },
      [](const UffdWorld& w, std::vector<std::string>* e) {
        for (size_t i = 0; i < 2; ++i) w.ExpectParent(i, true, "a dropped range reads zero", e);
      });
}

Status RunMidBatch(Schedule* s, pause::Variant v, Outcome* out) {
  UffdWorldOptions o;
  o.engine = true;
  o.batch_pages = 2;
  o.gated = {1};
  return RunWorld(
      s, v, out, o,
      [](UffdWorld& w) -> Programs {
        return {{"program", {{"madvise(p1, DONTNEED)", [&w] { w.Advise(1, 2, MADV_DONTNEED); }}}},
                {"gate", {{"install source p1", [&w] { w.OpenGate(); }}}}};
      },
      [](const UffdWorld& w, std::vector<std::string>* e) {
        w.ExpectParent(0, false, "a page outside the drop keeps its content", e);
        w.ExpectParent(1, true, "a dropped range reads zero", e);
      });
}

Status RunMunmap(Schedule* s, pause::Variant v, Outcome* out) {
  UffdWorldOptions o;
  o.engine = true;
  o.batch_pages = 2;
  return RunWorld(
      s, v, out, o,
      [](UffdWorld& w) -> Programs {
        return {{"program", {{"mmap(MAP_FIXED) over p1: unmapped, a new mapping there", [&w] {
                                w.UnmapAndReuse(1, 2);
                              }}}}};
      },
      [](const UffdWorld& w, std::vector<std::string>* e) {
        w.ExpectParent(0, false, "a page outside the unmap keeps its content", e);
        w.ExpectParent(1, true, "a new mapping where an unmapped range was reads zero", e);
      });
}

Status RunTwoFaults(Schedule* s, pause::Variant v, Outcome* out) {
  UffdWorldOptions o;
  o.engine = true;
  o.filler = false;
  auto seen = std::make_shared<std::vector<std::vector<char>>>(2);
  return RunWorld(
      s, v, out, o,
      [seen](UffdWorld& w) -> Programs {
        return {{"thread1", {{"read p0", [&w, seen] { w.Touch(0, &(*seen)[0]); }}}},
                {"thread2", {{"read p0", [&w, seen] { w.Touch(0, &(*seen)[1]); }}}}};
      },
      [seen](const UffdWorld& w, std::vector<std::string>* e) {
        w.ExpectParent(0, false, "two threads faulting on one page", e);
        for (size_t t = 0; t < 2; ++t) {
          if (!w.SameAsSource(0, (*seen)[t])) {
            e->push_back("thread" + std::to_string(t + 1) + " read p0 wrong: " +
                         ((*seen)[t].empty() ? "never returned" : "not its source bytes"));
          }
        }
      });
}

}  // namespace

void AddRestoreRaces(std::vector<RaceDef>* out) {
  out->push_back(
      ForkRace("fork-copy", "fork(2) while the filler COPYs the region's pages", FillOp::kCopy));
  out->push_back(ForkRace("fork-zeropage", "fork(2) while the filler ZEROPAGEs the region",
                          FillOp::kZeropage));
  out->push_back(
      ForkRace("fork-move", "fork(2) while the filler MOVEs pages into the region", FillOp::kMove));
  out->push_back(RemapRace(false));
  out->push_back(RemapRace(true));
  out->push_back({"dontneed-background-copy",
                  "MADV_DONTNEED of two pages while the background filler copies them",
                  {},
                  -1,
                  500,
                  RunDontneed});
  out->push_back({"munmap-copy",
                  "munmap of a page while the filler copies a batch over it",
                  {},
                  -1,
                  500,
                  RunMunmap});
  out->push_back({"remove-mid-batch",
                  "REMOVE arriving while a two-page COPY is half done (partial copy, then "
                  "EAGAIN)",
                  {pause::Variant::kFillPastRemove},
                  -1,
                  500,
                  RunMidBatch});
  out->push_back({"two-faults-one-page",
                  "two threads fault on one page before the first fault is served",
                  {},
                  -1,
                  500,
                  RunTwoFaults});
}

}  // namespace pagewise::explore
