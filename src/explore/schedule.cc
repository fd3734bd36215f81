// Schedule: choosing, and depth-first backtracking over the choices.
#include "explore/schedule.h"

#include <algorithm>

namespace pagewise::explore {

int Schedule::Cost(const Point& p, size_t i) {
  const bool prev_enabled = std::find(p.order.begin(), p.order.end(), p.prev) != p.order.end();
  return prev_enabled && p.order[i] != p.prev ? 1 : 0;
}

int Schedule::Choose(const std::vector<int>& enabled) {
  Point p;
  p.prev = chosen_.empty() ? -1 : chosen_.back();
  p.preemptions = preemptions_;
  const bool prev_enabled = std::find(enabled.begin(), enabled.end(), p.prev) != enabled.end();
  if (prev_enabled) p.order.push_back(p.prev);
  for (int a : enabled) {
    if (a != p.prev || !prev_enabled) p.order.push_back(a);
  }
  const size_t depth = points_.size();
  if (depth < prefix_.size()) {
    auto it = std::find(p.order.begin(), p.order.end(), prefix_[depth]);
    if (it == p.order.end()) {
      diverged_ = true;
    } else {
      p.taken = static_cast<size_t>(it - p.order.begin());
    }
  }
  preemptions_ += Cost(p, p.taken);
  const int pick = p.order[p.taken];
  points_.push_back(std::move(p));
  chosen_.push_back(pick);
  return pick;
}

std::optional<std::vector<int>> Schedule::Next(bool* pruned) const {
  for (size_t d = points_.size(); d-- > 0;) {
    const Point& p = points_[d];
    for (size_t i = p.taken + 1; i < p.order.size(); ++i) {
      if (bound_ >= 0 && p.preemptions + Cost(p, i) > bound_) {
        *pruned = true;
        continue;
      }
      std::vector<int> next(chosen_.begin(), chosen_.begin() + static_cast<ptrdiff_t>(d));
      next.push_back(p.order[i]);
      return next;
    }
  }
  return std::nullopt;
}

}  // namespace pagewise::explore
