// RunExplore: picks the races, enumerates each one's schedules and gathers
// the results. Drive(): the step loop every race shares.
#include "pagewise/explore.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "base/clock.h"
#include "explore/race.h"
#include "pagewise/probe.h"

namespace pagewise {
namespace explore {

namespace {

struct VariantDef {
  pause::Variant v;
  const char* name;
  const char* summary;
};

const VariantDef kVariants[] = {
    {pause::Variant::kEagainWithoutDrain, "eagain-without-drain",
     "restore engine: after EAGAIN from a fill, retry without reading the pending events"},
    {pause::Variant::kFillPastRemove, "fill-past-remove",
     "restore engine: a background batch already in flight is not held back by a REMOVE "
     "being read, and lands in the dropped range"},
    {pause::Variant::kTwoStepTracker, "two-step-tracker",
     "tracker: report written pages without re-arming them, re-arm at the start of the next "
     "collect (the soft-dirty pre-dump order: read, dump, clear)"},
    {pause::Variant::kForkChildFromParentState, "fork-child-from-parent-state",
     "restore engine: serve a forked child from the parent's filled state (the filler "
     "resumes before the FORK event is applied)"},
};

const std::vector<RaceDef>& Registry() {
  static const std::vector<RaceDef>* races = [] {
    auto* v = new std::vector<RaceDef>();
    AddRestoreRaces(v);
    AddTrackRaces(v);
    return v;
  }();
  return *races;
}

Status RequireKernel() {
  const KernelFeatures& f = Features();
  using namespace uffd_feature;
  PW_RETURN_IF_ERROR(RequireUffd(f,
                                 kEventFork | kEventRemap | kEventRemove | kEventUnmap | kMove |
                                     kPagefaultFlagWp | kWpAsync | kWpUnpopulated,
                                 "pagewise explore"));
  return RequirePagemapScan(f, "pagewise explore");
}

// Runs of one prefix before a replay that keeps diverging is an error.
constexpr int kReplayAttempts = 3;

ExploreResult ExploreOne(const RaceDef& race, pause::Variant variant,
                         const ExploreOptions& options) {
  ExploreResult r;
  r.race = race.name;
  r.variant = variant == pause::Variant::kNone ? "" : VariantName(variant);
  const uint64_t t0 = NowNs();
  pause::SetVariant(variant);
  std::vector<int> prefix;
  bool pruned = false;
  bool capped = false;
  for (;;) {
    // A replay can diverge when something the schedule does not control
    // took another turn (seen once under TSan, in mremap-copy): that run
    // says nothing about the race, so the same prefix is run again, and
    // only a prefix that diverges kReplayAttempts times is an error.
    Schedule s(prefix, race.preemption_bound);
    Outcome o;
    Status st = race.run(&s, variant, &o);
    for (int attempt = 1; st.ok() && s.diverged() && attempt < kReplayAttempts; ++attempt) {
      s = Schedule(prefix, race.preemption_bound);
      o = Outcome();
      st = race.run(&s, variant, &o);
    }
    r.schedules++;
    r.max_steps = std::max<uint64_t>(r.max_steps, s.steps());
    if (!st.ok()) {
      r.error = "schedule " + std::to_string(r.schedules) + ": " + st.ToString();
      break;
    }
    if (s.diverged()) {
      r.error = "schedule " + std::to_string(r.schedules) + " did not replay its prefix in " +
                std::to_string(kReplayAttempts) + " attempts (the run was not deterministic)";
      break;
    }
    if (!o.violations.empty()) {
      if (r.violations == 0) {
        r.first_violation_schedule = o.schedule;
        for (const std::string& n : o.notes) r.first_violation_schedule.push_back("  " + n);
        r.first_violation = o.violations;
      }
      r.violations++;
    }
    if (options.progress) {
      ExploreProgress p{r.race, r.schedules, r.violations, {}, {}};
      if (options.verbose) {
        p.schedule = o.schedule;
        for (const std::string& n : o.notes) p.schedule.push_back("  " + n);
        p.broke = o.violations;
      }
      options.progress(p);
    }
    std::optional<std::vector<int>> next = s.Next(&pruned);
    if (!next) break;
    if (r.schedules >= race.max_schedules) {
      capped = true;
      break;
    }
    prefix = std::move(*next);
  }
  pause::SetVariant(pause::Variant::kNone);
  r.exhaustive = r.error.empty() && !pruned && !capped;
  if (pruned) r.bound = "preemption bound " + std::to_string(race.preemption_bound);
  if (capped) {
    r.bound += std::string(r.bound.empty() ? "" : ", ") + "first " +
               std::to_string(race.max_schedules) + " schedules";
  }
  r.elapsed_seconds = static_cast<double>(NowNs() - t0) / 1e9;
  return r;
}

}  // namespace

const char* VariantName(pause::Variant v) {
  for (const VariantDef& d : kVariants) {
    if (d.v == v) return d.name;
  }
  return "none";
}

Status Drive(Controller& c, Schedule* s, size_t max_steps, Outcome* out) {
  for (;;) {
    const std::vector<int> enabled = c.Enabled();
    if (enabled.empty()) break;
    if (s->steps() >= max_steps) {
      out->violations.push_back("livelock: still going after " + std::to_string(max_steps) +
                                " steps (" + c.Where(enabled[0]) + ")");
      break;
    }
    const int pick = s->Choose(enabled);
    if (s->diverged()) break;
    if (std::getenv("PAGEWISE_EXPLORE_TRACE") != nullptr) {
      std::fprintf(stderr, "explore: step %zu: %s (%s)\n", s->steps(), c.name(pick).c_str(),
                   c.Where(pick).c_str());
    }
    Status st = c.Step(pick);
    if (st.code() == Code::kTimeout) {
      out->violations.push_back("livelock: " + st.message());
      break;
    }
    PW_RETURN_IF_ERROR(st);
  }
  for (size_t i = 0; i < c.trace().size(); ++i) {
    out->schedule.push_back(std::to_string(i + 1) + ". " + c.trace()[i]);
  }
  return Status::Ok();
}

}  // namespace explore

std::vector<ExploreRaceInfo> ExploreRaces() {
  std::vector<ExploreRaceInfo> out;
  for (const explore::RaceDef& r : explore::Registry()) {
    ExploreRaceInfo info{r.name, r.summary, {}};
    for (pause::Variant v : r.variants) info.variants.push_back(explore::VariantName(v));
    out.push_back(std::move(info));
  }
  return out;
}

std::vector<ExploreVariantInfo> ExploreVariants() {
  std::vector<ExploreVariantInfo> out;
  for (const explore::VariantDef& d : explore::kVariants) {
    ExploreVariantInfo info{d.name, d.summary, {}};
    for (const explore::RaceDef& r : explore::Registry()) {
      if (std::count(r.variants.begin(), r.variants.end(), d.v)) info.races.push_back(r.name);
    }
    out.push_back(std::move(info));
  }
  return out;
}

Result<std::vector<ExploreResult>> RunExplore(const ExploreOptions& options) {
  pause::Variant variant = pause::Variant::kNone;
  if (!options.variant.empty()) {
    std::string names;
    bool found = false;
    for (const explore::VariantDef& d : explore::kVariants) {
      names += std::string(names.empty() ? "" : ", ") + d.name;
      if (options.variant == d.name) {
        variant = d.v;
        found = true;
      }
    }
    if (!found) {
      return Status::InvalidArgument("unknown variant '" + options.variant + "'; valid: " + names);
    }
  }
  std::vector<const explore::RaceDef*> chosen;
  std::string names;
  for (const explore::RaceDef& r : explore::Registry()) {
    names += std::string(names.empty() ? "" : ", ") + r.name;
    const bool breaks = std::count(r.variants.begin(), r.variants.end(), variant) > 0;
    if (variant != pause::Variant::kNone && !breaks) continue;
    if (options.race == "all" || options.race == r.name) chosen.push_back(&r);
  }
  if (chosen.empty()) {
    if (variant != pause::Variant::kNone) {
      return Status::InvalidArgument("variant " + options.variant + " is not explored on race '" +
                                     options.race + "'; `pagewise explore --list` shows which");
    }
    return Status::InvalidArgument("unknown race '" + options.race + "'; valid: all, " + names);
  }
  PW_RETURN_IF_ERROR(explore::RequireKernel());
  std::vector<ExploreResult> out;
  for (const explore::RaceDef* r : chosen) {
    out.push_back(explore::ExploreOne(*r, variant, options));
  }
  return out;
}

}  // namespace pagewise
