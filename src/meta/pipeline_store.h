// Pipelines as stored (issue 23): each pipeline's spec, its runs, the state of every step of a
// run, and the step cache, in the metadata store so that a server that restarts resumes every
// running pipeline where it was (src/flow/pipeline_service.h drives them).
//
//   run:  RUNNING --finish--> SUCCEEDED | FAILED | CANCELLED (cancel_requested set first)
//         FAILED | CANCELLED --retry--> RUNNING (the steps that did not succeed are forgotten,
//                                                so they and what depends on them run again)
//   step: PENDING (ready, or waiting for a retry's not_before) --start--> RUNNING
//         RUNNING --> SUCCEEDED (outputs recorded; `cached` when a cache hit gave them)
//                   | PENDING (a failure with attempts left) | FAILED | CANCELLED
//         SKIPPED: a dependency failed, was cancelled or skipped, or a gate on its way did not pass
//
// A step is one row per instance: `item` is -1 for a step without for_each, 0..n-1 for the
// instances of a fanned-out one. A step that runs as a training-service job is inserted with
// its job in one transaction (start_job_step), so a crash between the two leaves neither and a
// restarted runner finds the job it started instead of starting another. Every change of a step
// or a run is a compare-and-set on its state, so two runners racing for one step see one
// succeed and the other FailedPrecondition.
//
// A run started by a trigger carries the trigger's event id: a second start with the same
// pipeline and event id returns the first run (create_run's `created` is false), so a trigger
// firing twice for one event starts one run.
//
// Thread-safe; `db` and `jobs` must outlive the store.
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

struct Pipeline {
  int64_t id = 0;
  std::string name, owner;
  std::string spec_text;  // the YAML as given (flow/pipeline_spec.h reads it)
  int64_t version = 1;    // 1, then one more for each changed spec
  int64_t created_at = 0, updated_at = 0;
};
// {"id", "name", "owner", "spec_text", "version", "created_at", "updated_at"}.
void to_json(json& j, const Pipeline& p);

struct PipelineRun {
  int64_t id = 0;
  int64_t pipeline_id = 0;
  std::string pipeline;  // its name
  int64_t pipeline_version = 0;
  std::string owner;
  std::string spec_text;         // the spec it runs (a copy: later edits do not change it)
  json params = json::object();  // the defaults with the run's overrides applied
  std::string state;             // RUNNING, SUCCEEDED, FAILED, CANCELLED
  std::string trigger;           // "manual", "cron", "dataset", "alias", "alert"
  std::string event_id;          // the trigger's event (empty: none)
  bool no_cache = false;         // no step of it reuses a cached result
  int64_t attempt = 1;           // 1, then one more for each retry
  int64_t created_at = 0, ended_at = 0;
  bool cancel_requested = false;
  std::string end_reason;
};
// {"id", "pipeline_id", "pipeline", "pipeline_version", "owner", "params", "state", "trigger",
// "event_id", "no_cache", "attempt", "created_at", "ended_at", "cancel_requested",
// "end_reason"} (the spec text is left out: GET the pipeline, or the run with ?spec=1).
void to_json(json& j, const PipelineRun& r);

struct StepRun {
  int64_t run_id = 0;
  std::string step;
  int64_t item = -1;              // the instance of a fanned-out step; -1: not fanned out
  std::string state;              // PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED, CANCELLED
  int64_t attempts = 0;           // starts so far
  int64_t job_id = 0;             // the training-service job running it (0: none)
  json inputs = json::object();   // its resolved `with` (and the gate's condition as run)
  json outputs = json::object();  // what it gave (references, small values)
  std::string cache_key;          // hex SHA-256 (empty: not cacheable)
  bool cached = false;            // its outputs came from the cache
  int64_t not_before = 0;         // ms: a retried step waits until then
  int64_t started_at = 0, ended_at = 0;
  std::string end_reason;  // why it failed, was skipped or retried, or what a gate decided
  // The runner running it in its own process (an inline step), and when that runner last said
  // it still does: another runner takes it over only once that is old.
  std::string runner;
  int64_t heartbeat_at = 0;
  // A row of run `run` for `step` (instance `item`) in `state`, the rest defaults.
  static StepRun of(int64_t run, std::string step, int64_t item, std::string state) {
    StepRun s;
    s.run_id = run;
    s.step = std::move(step);
    s.item = item;
    s.state = std::move(state);
    return s;
  }
};
// {"step", "item", "state", "attempts", "job_id", "inputs", "outputs", "cache_key", "cached",
// "not_before", "started_at", "ended_at", "end_reason"}.
void to_json(json& j, const StepRun& s);

// A cached step result: the outputs a step with `key` gave, and where.
struct CacheEntry {
  std::string key, kind;
  json outputs = json::object();
  int64_t run_id = 0;  // the pipeline run that made it
  std::string step;
  int64_t created_at = 0;
};

class PipelineStore {
 public:
  PipelineStore(StoreDb& db, JobQueue& jobs) : db_(db), jobs_(jobs) {}

  // Creates pipeline `name` with `spec_text`, or gives an existing one the new text (its
  // version goes up by one when the text changed). The caller has checked the spec. Audited as
  // pipeline.put. InvalidArgument for a bad name or a spec over 256 KiB.
  Result<Pipeline> put_pipeline(const std::string& name, const std::string& spec_text,
                                const Principal& who);
  // Pipeline `name`; NotFound says how to list them.
  Result<Pipeline> get_pipeline(const std::string& name);
  // Every pipeline, by name.
  Result<std::vector<Pipeline>> list_pipelines();

  // Starts a RUNNING run of pipeline `name` with `params` (already merged with the defaults),
  // audited as pipeline.run. With an `event_id`, a run of this pipeline with the same event id
  // is returned instead of a new one and *created is false.
  // With `as_read` (the pipeline as the caller read and checked it), the run gets that spec and
  // version, not whatever the pipeline holds by now.
  Result<PipelineRun> create_run(const std::string& name, const json& params,
                                 const std::string& trigger, const std::string& event_id,
                                 bool no_cache, const Principal& who, bool* created = nullptr,
                                 const Pipeline* as_read = nullptr);
  // Run `id`; NotFound says how to list them.
  Result<PipelineRun> get_run(int64_t id);
  // Runs newest first, optionally of one pipeline and/or `state`; paginated.
  Result<PageOf<PipelineRun>> list_runs(const std::string& pipeline, const std::string& state,
                                        int page_size, const std::string& page_token);
  // RUNNING runs, oldest first (what the runner drives).
  Result<std::vector<PipelineRun>> running_runs();
  // RUNNING -> `state` (SUCCEEDED, FAILED or CANCELLED) with `reason`. FailedPrecondition when
  // the run is not RUNNING.
  Result<PipelineRun> finish_run(int64_t id, const std::string& state, const std::string& reason);
  // Asks a RUNNING run to stop (the runner cancels its running steps, then ends it CANCELLED).
  // An editor cancels only their own runs, an admin any. FailedPrecondition when it has ended.
  // Audited as pipeline.cancel.
  Result<PipelineRun> request_cancel(int64_t id, const Principal& who);
  // A FAILED or CANCELLED run RUNNING again: its steps that did not succeed are forgotten (they
  // and what depends on them run again; succeeded steps keep their outputs). Same permissions
  // as request_cancel; audited as pipeline.retry. FailedPrecondition for another state.
  Result<PipelineRun> retry_run(int64_t id, const Principal& who);

  // The step rows of run `id`, by step name then item.
  Result<std::vector<StepRun>> steps(int64_t run_id);
  // Inserts a step row as given. FailedPrecondition when it exists (another runner made it).
  Status insert_step(const StepRun& s);
  // Inserts a RUNNING step row together with its job `j` (submitted as `who`), in one
  // transaction; the job's id. FailedPrecondition when the row exists.
  Result<int64_t> start_job_step(StepRun s, const NewJob& j, const Principal& who);
  // Replaces the row of (s.run_id, s.step, s.item) with `s` if its state is still `expected`
  // (and, with `expected_heartbeat` >= 0, its heartbeat still that). FailedPrecondition
  // otherwise (another runner changed it).
  Status update_step(const StepRun& s, const std::string& expected,
                     int64_t expected_heartbeat = -1);

  // The cached result for `key`, if any.
  Result<std::optional<CacheEntry>> cache_get(const std::string& key);
  // Records `e` (replacing an entry with the same key).
  Status cache_put(const CacheEntry& e);
  // Forgets `key` (its outputs are gone).
  Status cache_drop(const std::string& key);

 private:
  // A RUNNING run's transition of `update` (SET ... WHERE id = $1 AND <condition>), checked
  // against `who` when given (an editor their own runs).
  Result<PipelineRun> change_run(int64_t id, const Principal* who, const std::string& action,
                                 const std::string& allowed_states);
  StoreDb& db_;
  JobQueue& jobs_;
};

}  // namespace dlsys::meta
