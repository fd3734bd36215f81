// The races the explorer knows, and what running one schedule of a race
// means (internal to src/explore/).
//
// A race's run function builds fresh state (memory, userfaultfds, pagewise
// objects), starts its actors under a Controller, lets Drive() take the
// schedule's steps, then switches to free running and checks the race's
// invariants, appending every broken one to Outcome::violations.
//
// Thread safety: run functions are called from the exploring thread only.
#ifndef PAGEWISE_EXPLORE_RACE_H_
#define PAGEWISE_EXPLORE_RACE_H_

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "base/pause_point.h"
#include "explore/controller.h"
#include "explore/schedule.h"
#include "pagewise/status.h"

namespace pagewise::explore {

struct Outcome {
  std::vector<std::string> schedule;    // one line per step taken (Drive)
  std::vector<std::string> violations;  // invariants this schedule broke
  std::vector<std::string> notes;       // extra lines for the schedule printout
};

struct RaceDef {
  std::string name;
  std::string summary;
  // Variants (negative controls) explored on this race.
  std::vector<pause::Variant> variants;
  // < 0: every schedule; else at most this many preemptions per schedule.
  int preemption_bound = -1;
  // Safety cap: the enumeration stops (non-exhaustive) after this many.
  size_t max_schedules = 2000;
  // Runs one schedule with `variant` active (kNone: the real code).
  // Returns an error only when the explorer itself could not run it.
  std::function<Status(Schedule*, pause::Variant, Outcome*)> run;
};

// Takes steps chosen by `s` until no actor can step. A schedule longer than
// max_steps, or a step after which the process never settles, is a
// livelock: a violation (the actors were left where they are).
Status Drive(Controller& c, Schedule* s, size_t max_steps, Outcome* out);

// The registries, one per race family (race_restore.cc: a monitor serving
// a registered region; race_track.cc: trackers).
void AddRestoreRaces(std::vector<RaceDef>* out);
void AddTrackRaces(std::vector<RaceDef>* out);

// Names of the variants (for messages and JSON).
const char* VariantName(pause::Variant v);

}  // namespace pagewise::explore

#endif  // PAGEWISE_EXPLORE_RACE_H_
