// Drives the hyperparameter searches stored in the metadata store (meta/search_store.h) with the
// policy of search_policy.h: each tick, for every RUNNING search, it records the result of each
// trial whose job ended (the metric's last value in the trial's run), then starts and promotes
// trials as decided (a trial is a train job on the shared queue: the JobService runs it within
// the capacity like any other), and ends the search when the policy says it is done (the best
// trial's model registered when the spec asks). A cancelled search cancels its trials' jobs and
// ends CANCELLED once they have stopped.
//
// Everything it knows is in the store, so a server that restarts goes on where it was: trial
// jobs that were running resume from their checkpoints (JobService::recover), and the search
// neither starts a trial again nor loses a rung's result.
//
// Threading: one thread calls tick() (the server's job thread, after JobService::tick). `store`
// must outlive it. With several servers on one database each drives the searches; every change
// is a compare-and-set, so a race costs a FailedPrecondition, never a trial twice.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/status.h"
#include "jobs/search_spec.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"

namespace dlsys::jobs {

struct SearchServiceOptions {
  // Where trial runs keep their artifacts, and the check a registered model passes (the
  // server's); both may be null.
  meta::ArtifactStore* objects = nullptr;
  std::function<Status(const std::string& path)> validate_model;
};

class SearchService {
 public:
  SearchService(meta::MetaStore& store, SearchServiceOptions options)
      : store_(store), options_(std::move(options)) {}

  // One pass over the RUNNING searches (above). Returns how many trial jobs it queued (started
  // or promoted): the caller wakes the job service when it is not 0. An error of one search is
  // reported on stderr and fails that search when it is its spec's or a trial job's (its
  // running trials cancelled); the others go on. The database's (Unavailable) is returned.
  Result<int> tick();

 private:
  // Drives search `s` one step; the number of jobs it queued.
  Result<int> drive(const meta::Search& s);
  // The trial's metric after its rung: the last value of `metric` in its job's run `run_id`.
  std::optional<double> metric_of(int64_t run_id, const std::string& metric);
  // Ends `s` FAILED with `reason`, its running trials' jobs cancelled.
  void fail_search(const meta::Search& s, const std::string& reason);
  // Registers the best trial's model once (claim_registration; a version already made from its
  // run is found, not made again) and records it; the version. FailedPrecondition when another
  // service has claimed it.
  Result<int64_t> register_best(const meta::Search& s, const SearchSpec& spec,
                                const meta::SearchTrial& best);

  meta::MetaStore& store_;
  SearchServiceOptions options_;
};

}  // namespace dlsys::jobs
