#include "jobs/search_policy.h"

#include <algorithm>
#include <set>

namespace dlsys::jobs {

namespace {

// Whether `a` is better than `b` for the spec's mode.
bool better(const SearchSpec& s, double a, double b) {
  return s.maximize ? a > b : a < b;
}

}  // namespace

int64_t best_trial(const SearchSpec& spec, const std::vector<meta::SearchTrial>& trials) {
  size_t top = 0;  // the most rungs any trial has a value for
  for (const auto& t : trials)
    for (size_t r = 0; r < t.results.size(); ++r)
      if (t.results[r]) top = std::max(top, r + 1);
  if (top == 0) return -1;
  int64_t best = -1;
  double value = 0;
  for (const auto& t : trials) {
    if (t.results.size() < top || !t.results[top - 1]) continue;
    if (best < 0 || better(spec, *t.results[top - 1], value)) {
      best = t.trial;
      value = *t.results[top - 1];
    }
  }
  return best;
}

SearchStep decide_search(const SearchSpec& spec, int64_t total,
                         const std::vector<meta::SearchTrial>& trials) {
  SearchStep step;
  const int64_t rungs = static_cast<int64_t>(rung_epochs(spec).size());
  int64_t running = 0, next = 0;
  for (const auto& t : trials) {
    if (t.state == "RUNNING") ++running;
    next = std::max(next, t.trial + 1);
  }
  // Once every trial has started and none runs (the budget's end is known), a rung none of whose
  // trials has a result at the next rung promotes its best paused trial: the top rung gets a
  // trial (as synchronous successive halving keeps at least one) unless every candidate fails.
  const bool last_call = running == 0 && next >= total;
  std::set<int64_t> chosen;        // promoted in this step
  std::set<int64_t> chosen_rungs;  // the rungs they were promoted from
  for (int64_t slot = running; slot < spec.parallelism; ++slot) {
    bool promoted = false;
    for (int64_t k = rungs - 2; k >= 0 && !promoted; --k) {
      // The trials that finished rung k with a value, best first.
      std::vector<const meta::SearchTrial*> done;
      for (const auto& t : trials)
        if (static_cast<int64_t>(t.results.size()) > k && t.results[k]) done.push_back(&t);
      std::stable_sort(done.begin(), done.end(), [&](const auto* a, const auto* b) {
        return better(spec, *a->results[k], *b->results[k]);
      });
      size_t quota = done.size() / static_cast<size_t>(spec.reduction_factor);
      if (last_call) {
        // None of the rung's promoted trials has a result at the next rung (none was promoted,
        // or they failed there): its best paused trial goes on.
        bool beyond = false;
        for (const auto& t : trials)
          beyond = beyond || (static_cast<int64_t>(t.results.size()) > k + 1 && t.results[k + 1]);
        // One at a time: the next only if that one fails too.
        if (!beyond && !chosen_rungs.count(k)) quota = done.size();
      }
      for (size_t i = 0; i < quota; ++i) {
        const meta::SearchTrial* t = done[i];
        if (t->state == "PAUSED" && t->rung == k && !chosen.count(t->trial)) {
          step.actions.push_back({SearchAction::Kind::kPromote, t->trial, k});
          chosen.insert(t->trial);
          chosen_rungs.insert(k);
          promoted = true;
          break;
        }
      }
    }
    if (promoted) continue;
    if (next < total) {
      step.actions.push_back({SearchAction::Kind::kStart, next++, 0});
      continue;
    }
    break;
  }
  step.done = running == 0 && step.actions.empty();
  step.best_trial = best_trial(spec, trials);
  return step;
}

}  // namespace dlsys::jobs
