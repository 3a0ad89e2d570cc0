// The pipeline runner (issue 23, docs/pipelines.md): drives every RUNNING pipeline run stored in
// the metadata store (meta/pipeline_store.h) one step at a time. Each pass, for each run, in the
// spec's order, a step whose dependencies all succeeded gets its references resolved and its
// cache key computed, and then
//   - a cache hit whose outputs all still exist (a deleted artifact, dataset or model version is
//     a miss) is recorded SUCCEEDED with those outputs, without running anything;
//   - `train`, `predict` and `command` run as training-service jobs (meta/job_queue.h; the
//     JobService runs them, with the step's retries and timeout), inserted with the step's row in
//     one transaction; `search` is a hyperparameter search (meta/search_store.h);
//   - `gate`, `register`, `alias` and `notify` run here, and the kinds that need more than the
//     metadata store (`data.push`, `data.validate`, `evaluate`, `deploy`) through the handlers the
//     caller gives (PipelineServiceOptions::handlers: `dlsys server` wires them to its dataset
//     store, the engine and its model server), on the service's worker threads.
// A step that fails with attempts left is retried after a backoff (doubling); a gate whose
// condition is false stops the steps that depend on it (SKIPPED), not the run; a failed step
// skips its dependents while independent branches go on. The run ends when no step can move:
// SUCCEEDED when none failed, else FAILED; CANCELLED after a cancel stopped its running steps.
//
// Restarts: everything is in the store. A job step re-attaches to its job (which the JobService
// recovered); a step that was running here when the server stopped runs again (its handler is
// idempotent: a registration of a run already registered finds that version; a push of the same
// data makes no new version); finished steps are never run again.
//
// Threading: start() runs the runner on a thread of its own (tick() every `poll`, or at once
// after wake()); tests may call tick() themselves instead. Inline steps run on `workers` threads.
// start_run() and wake() may be called from any thread. `store` must outlive the service.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/status.h"
#include "flow/pipeline_spec.h"
#include "flow/step_cache_key.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"

namespace dlsys::flow {

using json = nlohmann::json;

// What a step handler is given: the step, its instance and its resolved `with`.
struct StepCall {
  const meta::PipelineRun* run = nullptr;
  const StepSpec* step = nullptr;
  int64_t item = -1;     // -1: not fanned out
  json with;             // every reference resolved
  meta::Principal who;   // the run's owner, as an editor
  std::string work_dir;  // where relative paths are
};

// An inline step: returns its outputs as an object of flat keys ("dataset", "metrics.accuracy").
// Its error is the step's failure (retried when the step has retries left).
using StepHandler = std::function<Result<json>(const StepCall&)>;

// A dataset version as a step sees it.
struct DatasetVersion {
  std::string label;  // "digits@v3"
  std::string id;     // what it holds (its manifest's SHA-256)
};

struct PipelineServiceOptions {
  // The kinds that need more than the metadata store, by kind: data.push, data.validate,
  // evaluate, deploy. A step of a kind without one fails, naming what is missing.
  std::map<std::string, StepHandler> handlers;
  // The dataset version a reference names now ("digits", "digits@prod", "digits@v3:train"):
  // its label, which moving references are pinned to and a dataset trigger watches, and its
  // content id, which a step that reads it is cached by; NotFound when there is none (the
  // cache's check that a dataset output still exists). Empty: datasets are known by their
  // reference alone, never checked, and dataset triggers never fire.
  std::function<Result<DatasetVersion>(const std::string& ref)> dataset_version;
  // Where artifacts are (the cache's check of model files and artifacts), and the check a
  // registered model passes; both may be null.
  meta::ArtifactStore* objects = nullptr;
  std::function<Status(const std::string& path)> validate_model;
  // Called when a job step was queued (the JobService starts it at once). May be empty.
  std::function<void()> wake_jobs;
  // Where relative paths of a step (a train spec, a command's files and folder, a data file)
  // are; empty: the current directory.
  std::string work_dir;
  // Who this runner is among the runners sharing one database (`dlsys server` sets host:port;
  // default: the host's name and the process id). A step that runs in a runner's process is
  // marked with it; another runner takes such a step over (runs it again) only once its runner
  // has not said it still runs it for `lease_ms`. The same runner, restarted, runs its lost
  // steps again at once.
  std::string runner;
  int64_t lease_ms = 30000;
  int64_t retry_backoff_ms = 1000;  // before a step's retry; doubled per attempt (up to 1024x)
  int workers = 4;                  // inline steps running at once
  std::chrono::milliseconds poll{1000};
  // A job's end is taken as settled this long after it ended even when its run is not ended
  // (the service failed to end it).
  int64_t settle_grace_ms = 10000;
};

class PipelineService {
 public:
  PipelineService(meta::MetaStore& store, PipelineServiceOptions options);
  ~PipelineService();
  PipelineService(const PipelineService&) = delete;
  PipelineService& operator=(const PipelineService&) = delete;

  // Sets options.runner (a server that knows its port once it listens); before start().
  void set_runner(const std::string& runner) { options_.runner = runner; }
  // Starts the runner thread.
  void start();
  // Stops it: waits for the inline steps that workers are running (they are not interrupted; a
  // long one holds the stop as long as it runs) and joins; steps still queued are left for the
  // next start (they never began). Running job steps stay with the job service. Idempotent.
  void stop();
  // Makes the runner pass over the runs now (a run started, a job ended).
  void wake();

  // Starts a run of pipeline `name` as `who`: `overrides` (parameter values, checked against
  // the spec's parameters) over the spec's defaults. With `event_id`, a second start for the
  // same event returns the first run with *created false. InvalidArgument for an unknown
  // parameter or a stored spec that no longer parses; NotFound for an unknown pipeline.
  Result<meta::PipelineRun> start_run(const std::string& name, const json& overrides,
                                      const std::string& trigger, const std::string& event_id,
                                      bool no_cache, const meta::Principal& who,
                                      bool* created = nullptr);

  // One pass over the RUNNING runs (above); how many steps changed state. The errors of one run
  // (its spec, a step) are recorded on it; a database error is returned.
  Result<int> tick();

  // Triggers (docs/pipelines.md): starts the runs that the pipelines' cron, every, dataset and
  // alias triggers call for now, as their owners, each once per event id (a cron minute, an
  // interval's slot, a dataset or alias's new version). A pipeline runs one triggered run at a
  // time: a time trigger that comes due while one runs is skipped, a version trigger waits for
  // it to end. At most one pass a second (the runner thread calls it after each tick); the
  // number of runs started.
  Result<int> fire_triggers();
  // An alert from monitoring: a run of `pipeline` through its alert trigger for `alert` (or
  // "*"), once per `event_id`. NotFound when the pipeline has no such trigger.
  Result<meta::PipelineRun> fire_alert(const std::string& pipeline, const std::string& alert,
                                       const std::string& event_id, bool* created = nullptr);

 private:
  struct InFlight;  // an inline step on a worker
  struct Pass;      // one run's pass: its spec, its step rows, what changed
  Result<int> drive(const meta::PipelineRun& run);
  // Records `r` (inserted when `expected` is empty, else a compare-and-set from it, and from
  // `heartbeat` when >= 0). *won (when given) says whether this call changed the row (another
  // runner may have first: not an error).
  Status save(Pass& p, meta::StepRun& r, const std::string& expected, bool* won = nullptr,
              int64_t heartbeat = -1);
  // A failure of `r`: PENDING for a retry while attempts last (never a gate's), else FAILED.
  Status fail(Pass& p, const StepSpec& st, meta::StepRun& r, const std::string& expected,
              const std::string& reason);
  // Starts an instance of `st` (`item` its for_each item): resolves, looks in the cache, and
  // runs it (a job, a search, here, or on a worker).
  // `expected_heartbeat` >= 0: only if the row's heartbeat is still that (a takeover).
  Status begin_step(Pass& p, const StepSpec& st, const json& item, meta::StepRun& r,
                    const std::string& expected, int64_t expected_heartbeat = -1);
  // A RUNNING instance: whether its job, search or worker finished, or it ran out of time.
  Status poll_step(Pass& p, const StepSpec& st, meta::StepRun& r);
  // Lineage of a step that succeeded: the versions it read -> the pipeline run ("input"), the
  // pipeline run -> what it made ("produced": dataset and model versions, runs).
  void record_lineage(const meta::PipelineRun& run, const StepSpec& st, const meta::StepRun& r);
  // Replaces the dataset and model versions in `with` that a moving reference names (a dataset's
  // latest or a tag, a model's alias or latest) with the version they name now.
  void pin_versions(json* with);
  // Runs an inline step of a kind this service knows (gate, register, alias, notify).
  Result<json> run_builtin(const StepCall& call);
  // What a finished job gave, by the step's kind.
  Result<json> job_outputs(const StepSpec& st, const meta::Job& job);
  // The content ids of a step's inputs and its code files, for its cache key.
  Result<StepCacheInputs> cache_inputs(const StepSpec& st, const json& with);
  // OK when every output a cached result names still exists; NotFound naming the one gone.
  Status outputs_exist(const json& outputs);
  // A cancelled run: stops its running steps, then ends it CANCELLED.
  Result<int> cancel(Pass& p);
  void worker_loop();
  void runner_loop();

  meta::MetaStore& store_;
  PipelineServiceOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;       // the runner's wake-up
  std::condition_variable work_cv_;  // the workers'
  bool woken_ = false, stopping_ = false;
  std::deque<std::shared_ptr<InFlight>> queue_;                // inline steps to run
  std::map<std::string, std::shared_ptr<InFlight>> inflight_;  // by run/step/item key
  std::vector<std::thread> workers_;
  std::thread runner_;
  std::map<int64_t, std::shared_ptr<const PipelineSpec>> specs_;  // parsed, by run id
  // Triggers (the runner thread's): the last cron minute or interval slot looked at and the last
  // version event started, by "pipeline#trigger"; when they were last looked at.
  std::map<std::string, int64_t> trigger_slot_;
  std::map<std::string, std::string> trigger_event_;
  // Each pipeline's spec as parsed, by id, with its version (one that does not parse: empty).
  std::map<int64_t, std::pair<int64_t, std::shared_ptr<const PipelineSpec>>> pipeline_specs_;
  int64_t triggers_at_ = 0;
};

}  // namespace dlsys::flow
