// Schedule: the choices of one run of a race (which actor steps next), and
// the depth-first enumeration of every schedule by replay.
//
// A run follows a prefix of choices, then takes the default choice at every
// later point: the actor that stepped last, if it can step again (no
// preemption), else the enabled actor with the lowest id. Every point
// records what was enabled. Next() finds the deepest point with an untried
// alternative and returns the prefix that takes it: replaying prefixes from
// fresh memory and userfaultfds visits every schedule exactly once (the
// actors are deterministic given the order of their steps). With a
// preemption bound, alternatives that would switch away from an actor that
// could have gone on are taken only while the run has made fewer than
// `bound` such switches (CHESS-style bounding); pruned alternatives make
// the enumeration non-exhaustive.
//
// Thread safety: none; one Schedule per run, used by the exploring thread.
#ifndef PAGEWISE_EXPLORE_SCHEDULE_H_
#define PAGEWISE_EXPLORE_SCHEDULE_H_

#include <optional>
#include <string>
#include <vector>

namespace pagewise::explore {

class Schedule {
 public:
  Schedule(std::vector<int> prefix, int preemption_bound)
      : prefix_(std::move(prefix)), bound_(preemption_bound) {}

  // Picks one of `enabled` (actor ids, ascending, not empty). Sets
  // diverged() if the prefix asked for an actor that is not enabled (the
  // run was not deterministic).
  int Choose(const std::vector<int>& enabled);
  bool diverged() const { return diverged_; }
  size_t steps() const { return points_.size(); }
  const std::vector<int>& choices() const { return chosen_; }

  // The prefix of the next schedule in depth-first order, or nullopt when
  // every schedule (within the bound) was visited. *pruned is set when an
  // alternative was skipped because of the bound.
  std::optional<std::vector<int>> Next(bool* pruned) const;

 private:
  struct Point {
    std::vector<int> order;  // enabled actors, default choice first
    size_t taken = 0;        // index into order
    int prev = -1;           // the actor that stepped before this point
    int preemptions = 0;     // made before this point
  };
  // Cost of taking order[i] at p: 1 if it preempts p.prev.
  static int Cost(const Point& p, size_t i);

  std::vector<int> prefix_;
  int bound_;
  std::vector<Point> points_;
  std::vector<int> chosen_;
  int preemptions_ = 0;
  bool diverged_ = false;
};

}  // namespace pagewise::explore

#endif  // PAGEWISE_EXPLORE_SCHEDULE_H_
