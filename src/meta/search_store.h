// Hyperparameter searches as stored (issue 22): each search, its trials, and where every trial
// stands in successive halving (ASHA), in the metadata store so that a server that restarts
// resumes a search where it was without starting any trial again (src/jobs/search_service.h
// drives them).
//
// A search runs trials; each trial is one `train` job (meta/job_queue.h) with the trial's
// hyperparameters, trained to a rung's budget of epochs at a time:
//
//   trial:  RUNNING (its job at `rung`) --record_result--> PAUSED (may be promoted later)
//              ^                                          | COMPLETED (it reached the top rung)
//              |                                          | FAILED (its job failed)
//              \--------------- promote ------------------/ (PAUSED only: the job, SUCCEEDED,
//                                                            is queued again with more epochs)
//           PAUSED --finish(search)--> STOPPED (never promoted)
//   search: RUNNING --finish--> SUCCEEDED | FAILED | CANCELLED (cancel_requested set first)
//
// Starting a trial inserts its job and its row in one transaction, and promoting one queues its
// job again and moves it up a rung in one transaction, so a crash between the two leaves
// neither. Every change is a compare-and-set on the row's state (and rung). Thread-safe; `db`
// and `jobs` must outlive the store.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "meta/auth.h"
#include "meta/job_queue.h"
#include "meta/store_db.h"

namespace dlsys::meta {

struct Search {
  int64_t id = 0;
  std::string name, owner;
  json spec;                             // as submitted (an object; jobs/search_spec.h reads it)
  std::string state;                     // RUNNING, SUCCEEDED, FAILED, CANCELLED
  int64_t created_at = 0, ended_at = 0;  // ms
  int64_t best_trial = -1;               // the best trial once the search ended (-1: none)
  bool cancel_requested = false;
  std::string end_reason;
  // The version the best trial was registered as (0: none; -1: being registered).
  int64_t model_version = 0;
};
// {"id", "name", "owner", "spec", "state", "created_at", "ended_at", "best_trial",
// "cancel_requested", "end_reason", "model_version"}.
void to_json(json& j, const Search& s);

struct SearchTrial {
  int64_t search_id = 0;
  int64_t trial = 0;                           // 0, 1, ... in the order they started
  json params = json::object();                // the hyperparameters it tries
  int64_t job_id = 0;                          // the train job that runs it (all its rungs)
  int64_t rung = 0;                            // the rung it is at (RUNNING) or last finished
  std::string state;                           // RUNNING, PAUSED, COMPLETED, STOPPED, FAILED
  std::vector<std::optional<double>> results;  // the metric at the end of each rung it finished
  std::string end_reason;                      // FAILED: why
};
// {"search_id", "trial", "params", "job_id", "rung", "state", "results" (null: no value),
// "end_reason"}.
void to_json(json& j, const SearchTrial& t);

class SearchStore {
 public:
  SearchStore(StoreDb& db, JobQueue& jobs) : db_(db), jobs_(jobs) {}

  // Records a new RUNNING search for `who` (its owner), audited as search.submit.
  // InvalidArgument for an empty or long name or a spec that is not an object (or over 64 KiB).
  Result<Search> create(const std::string& name, const json& spec, const Principal& who);
  // Search `id`; NotFound says how to list them.
  Result<Search> get(int64_t id);
  // Searches newest first, optionally of one `state`; paginated.
  Result<PageOf<Search>> list(const std::string& state, int page_size,
                              const std::string& page_token);
  // RUNNING searches, oldest first (what the service drives).
  Result<std::vector<Search>> running();
  // The trials of search `id` in trial order.
  Result<std::vector<SearchTrial>> trials(int64_t id);

  // Starts trial number `trial` of search `id` at rung 0: queues `job` for the search's owner
  // and records the trial with it, in one transaction. AlreadyExists when that trial exists;
  // FailedPrecondition when the search has ended or is being cancelled.
  Result<SearchTrial> start_trial(int64_t id, int64_t trial, const json& params, const NewJob& job);
  // The trial's job ended at `rung`: RUNNING -> COMPLETED (`top`: its last rung), PAUSED, or
  // FAILED (`failed`, with `reason`), adding `value` (the metric; nullopt when the run has
  // none) to its results. FailedPrecondition when it is not RUNNING at that rung.
  Status record_result(int64_t id, int64_t trial, int64_t rung, std::optional<double> value,
                       bool top, bool failed, const std::string& reason);
  // PAUSED at `rung` -> RUNNING at rung + 1 with its (SUCCEEDED) job queued again with
  // `job_spec` (JobQueue::rerun), in one transaction. FailedPrecondition when either is not in
  // that state (promoted already, or the job changed) or the search has ended or is being
  // cancelled.
  Status promote(int64_t id, int64_t trial, int64_t rung, const json& job_spec);
  // RUNNING -> `state` (SUCCEEDED, FAILED, CANCELLED) with the best trial (-1: none) and
  // `reason`; its PAUSED trials become STOPPED. SUCCEEDED and CANCELLED only when no trial is
  // RUNNING (FailedPrecondition otherwise).
  Result<Search> finish(int64_t id, const std::string& state, int64_t best_trial,
                        const std::string& reason);
  // Claims the registration of the best trial's model for the caller (model_version 0 -> -1):
  // of two services ending one search, one registers. FailedPrecondition when it was claimed
  // before (a service that stopped after claiming left -1: the caller looks for the version).
  Status claim_registration(int64_t id);
  // Records the model version the best trial was registered as.
  Status set_model_version(int64_t id, int64_t version);
  // Asks a RUNNING search to stop (the service cancels its trials' jobs, then finish()):
  // an editor their own searches, an admin any (PermissionDenied otherwise); FailedPrecondition
  // when it has ended. Audited as search.cancel.
  Result<Search> cancel(int64_t id, const Principal& who);

 private:
  StoreDb& db_;
  JobQueue& jobs_;
};

}  // namespace dlsys::meta
