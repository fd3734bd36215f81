// Explore: every interleaving of the kernel races pagewise handles, forced
// one by one through the real kernel and pagewise's real code.
//
// A race is a handful of actors: the restored or tracked program's threads
// (fork, mremap, madvise, munmap, mprotect, writes, page faults),
// pagewise's own threads (the restore engine's loop and filler, a tracker's
// collector and fault thread) and, for races below pagewise's engine, a
// monitor driving the userfaultfd directly. Each actor takes one step at a
// time when the explorer says so; pagewise's threads stop at named pause
// points compiled into their code, and the kernel's own blocking points (a
// faulting thread sleeps until its page is installed, a thread whose
// madvise/munmap/mremap/fork raised an event sleeps until the monitor read
// it, a fill copying from a page that is not there yet sleeps mid-batch)
// are steps too. Every schedule runs on fresh memory and userfaultfds, and
// the race's invariants are checked at its end (a dropped range reads zero,
// a forked child reads the source, no write is missing from the next two
// collects...). docs/races.md describes each race, the kernel rule behind
// it and how pagewise handles it.
//
// Negative controls (variants) switch on a deliberately broken version of
// one code path in pagewise's own code (or, for the tracker, the two-step
// backend); exploring the races they concern must then find a violation.
//
// Needs userfaultfd with the non-cooperative events, UFFDIO_MOVE,
// write-protect with WP_ASYNC and PAGEMAP_SCAN (Linux 6.8+): kNotSupported
// names what is missing.
//
// Thread safety: RunExplore() must not run concurrently with itself or with
// anything else in the process that uses pagewise's restore engine or
// trackers (it attaches to their pause points, process-wide).
#ifndef PAGEWISE_EXPLORE_H_
#define PAGEWISE_EXPLORE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/status.h"

namespace pagewise {

PAGEWISE_API_BEGIN

struct ExploreRaceInfo {
  std::string name;
  std::string summary;
  std::vector<std::string> variants;  // negative controls that break this race
};

struct ExploreVariantInfo {
  std::string name;
  std::string summary;
  std::vector<std::string> races;  // the races it is explored on
};

// Every race, in the order `all` runs them, and every variant.
std::vector<ExploreRaceInfo> ExploreRaces();
std::vector<ExploreVariantInfo> ExploreVariants();

struct ExploreProgress {
  std::string race;
  uint64_t schedules = 0;  // explored so far in this race
  uint64_t violations = 0;
  // With ExploreOptions::verbose: the schedule just run, step by step, and
  // what it broke (empty when nothing).
  std::vector<std::string> schedule;
  std::vector<std::string> broke;
};

struct ExploreOptions {
  // A race name, or "all". With a variant, "all" means the variant's races.
  std::string race = "all";
  // A variant name, or "" for pagewise's real code.
  std::string variant;
  // Called after every schedule, on the calling thread. Optional.
  std::function<void(const ExploreProgress&)> progress;
  // Hand every schedule's steps to `progress` (for --verbose).
  bool verbose = false;
};

struct ExploreResult {
  std::string race;
  std::string variant;     // "" for the real code
  uint64_t schedules = 0;  // schedules run
  bool exhaustive = false;
  // How the schedule space was bounded when not exhaustive, e.g.
  // "preemption bound 2"; "" when exhaustive.
  std::string bound;
  uint64_t max_steps = 0;   // the longest schedule, in steps
  uint64_t violations = 0;  // schedules that broke an invariant
  // The first violating schedule: one line per step, then what broke.
  std::vector<std::string> first_violation_schedule;
  std::vector<std::string> first_violation;
  // Set when the explorer itself failed (setup, a run that would not
  // replay deterministically); the counts are then incomplete.
  std::string error;
  double elapsed_seconds = 0;
};

// Explores the chosen races. Errors: kInvalidArgument for an unknown race or
// variant (naming the valid ones), kNotSupported for a missing kernel
// feature. A race that could not be explored has `error` set in its result.
Result<std::vector<ExploreResult>> RunExplore(const ExploreOptions& options);

PAGEWISE_API_END

}  // namespace pagewise

#endif  // PAGEWISE_EXPLORE_H_
