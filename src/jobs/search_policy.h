// What a search does next (issue 22), as a pure function of its spec and its trials, so that it
// is tested without processes and a restarted server decides as the old one would have.
//
// ASHA (asynchronous successive halving, Li et al. 2020): trials train rung by rung (3, 9, 27
// epochs: search_spec.h rung_epochs). Whenever the search has a free slot (fewer than
// `parallelism` trials RUNNING), it promotes a trial if it can, else starts a new one:
//   - promote: for the rungs from the highest below the top down to the first, a PAUSED trial
//     that is in the best floor(n / reduction_factor) of the n trials that finished that rung
//     goes on to the next rung (its job is queued again with more epochs and continues from its
//     checkpoint);
//   - start: the next trial of trial_params(), while any are left;
//   - at the end (every trial started, none running), a rung none of whose trials has a result
//     at the next rung (none was promoted, n < reduction_factor, or the promoted ones failed)
//     promotes its best paused trial, so that a trial reaches the top rung unless all fail.
// No trial waits for a rung to fill up: a promotion is decided on the results known then, so
// slots never idle (the "asynchronous" part). Without asha there is one rung and nothing to
// promote. The search is done when nothing runs and nothing can start or be promoted.
//
// The best trial: among the trials with a value at the highest rung any trial reached, the one
// whose value there is best (the lowest trial number on ties).
#pragma once

#include <optional>
#include <vector>

#include "jobs/search_spec.h"
#include "meta/search_store.h"

namespace dlsys::jobs {

struct SearchAction {
  enum class Kind { kStart, kPromote };
  Kind kind = Kind::kStart;
  int64_t trial = 0;  // kStart: the new trial's number; kPromote: the trial
  int64_t rung = 0;   // kPromote: the rung it finished (it goes to rung + 1); kStart: 0
};

struct SearchStep {
  std::vector<SearchAction> actions;  // in order, at most the free slots
  bool done = false;                  // nothing runs, nothing to start or promote
  int64_t best_trial = -1;            // as defined above (-1: no trial has a value)
};

// Decides for search `spec` with `total` trials to draw (trial_params().size()) and its
// `trials` as stored (each at its rung; RUNNING, PAUSED, COMPLETED, STOPPED or FAILED).
SearchStep decide_search(const SearchSpec& spec, int64_t total,
                         const std::vector<meta::SearchTrial>& trials);

// The best trial of `trials` (above); -1 when none has a value.
int64_t best_trial(const SearchSpec& spec, const std::vector<meta::SearchTrial>& trials);

}  // namespace dlsys::jobs
