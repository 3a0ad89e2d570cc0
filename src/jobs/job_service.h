// The training service's loop (issue 22), local executor: it reads the queue (meta/job_queue),
// decides what to start (scheduler.h), runs each attempt as a ChildProcess, watches it (cancel,
// max_run_time, heartbeat) and settles how it ended: success, a retry after a backoff while
// attempts last, a failure, or a cancel. It runs `command` jobs (the job's program) and `train`
// jobs (`dlsys train` on the job's spec, resumed from its checkpoint on a retry) and predict jobs
// (`dlsys predict`, resumed from its finished shards on a retry).
//
// A job attempt gets a directory <work_dir>/<id>/ with its log (`log`, stdout and stderr of every
// attempt), an output directory (`output/`), for train jobs the run directory (`run/`, where the
// checkpoints are) and the heartbeat file (`heartbeat`), and the environment DLSYS_JOB_ID,
// DLSYS_OUTPUT_DIR, DLSYS_ATTEMPT, DLSYS_HEARTBEAT_FILE, DLSYS_RUN_ID, OMP_NUM_THREADS (and
// DLSYS_SERVER when the service knows its server). A command job also gets its hyperparameters
// as JSON in DLSYS_HYPERPARAMETERS and, with a dataset, the version exported as CSV to
// DLSYS_DATA_DIR/data.csv (`dlsys data pull`, before its command starts).
//
// Every job is a tracked run, made when it first starts (experiment and run named after the job,
// tagged dlsys.job_id and dlsys.owner; a command job's hyperparameters as params), passed to the
// process as DLSYS_RUN_ID (a train job as `dlsys train --run-id`), so retries continue one run.
// When an attempt ends the service adds what it used to the job (JobQueue::add_usage: CPU time,
// core time = threads x wall time, peak resident set) and to the run (metrics job.cpu_seconds,
// job.core_seconds, job.peak_memory_mb at step = the attempt), uploads the log as the artifact
// job.log, and for a command job logs the metrics it printed as JSON lines
// ({"metric": "loss", "value": 0.1, "step": 3}) and, on success, its output files as artifacts
// output/<name>. A job that succeeds with on_success.register has its run's ONNX file registered
// as a new model version (and the alias moved); a registration that fails fails the job. The run
// ends with the job: FINISHED, FAILED, or KILLED when cancelled.
//
// Watching: a cancel asked for (JobQueue::cancel) and a run past max_run_time get SIGTERM, then
// SIGKILL after stop_grace (a trainer checkpoints on SIGTERM). A process that has touched its
// heartbeat file and then leaves it untouched for heartbeat_timeout is hung: it is killed
// (SIGKILL) and retried. Processes that never touch the file (most commands) are judged by
// their exit alone.
//
// Ownership and threading: the service keeps the ChildProcess of every attempt it started; one
// thread calls recover(), tick(), wait() and shutdown(); wake() may be called from any thread.
// `store` must outlive it. Destroying it kills what it started (their jobs stay RUNNING in the
// store, and recover() requeues them when a service starts); shutdown() stops them gently first.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "jobs/executor.h"
#include "jobs/job_spec.h"
#include "jobs/scheduler.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"

namespace dlsys::jobs {

struct JobServiceOptions {
  SchedulerConfig scheduler;
  std::string work_dir;                         // per-job directories under it
  std::chrono::milliseconds stop_grace{10000};  // SIGTERM to SIGKILL on cancel, time-out, stop
  int64_t retry_backoff_ms = 250;               // doubled per attempt
  int64_t usage_window_ms = 24 * 3600 * 1000;   // fair share looks back this far
  // A job that touched its heartbeat file and then stopped for this long is killed and retried.
  std::chrono::milliseconds heartbeat_timeout{8000};
  // Train jobs: the dlsys executable that runs them (default: this process's own), where they
  // record their run and read datasets (server_url, e.g. http://127.0.0.1:8080, passed as
  // --server and DLSYS_SERVER; else data_dir as --data-dir), and their checkpoint interval in
  // steps (a job's hyperparameter checkpoint_every overrides it).
  std::string dlsys_exe;
  std::string server_url;
  std::string data_dir;
  int64_t checkpoint_every = 100;
  // Where a job's run keeps its artifacts (the log, a command job's output files); null: the
  // run gets none.
  meta::ArtifactStore* objects = nullptr;
  // The most bytes of a command job's output files kept as artifacts (in directory order);
  // files past it are left in its output folder, and its log says which.
  int64_t max_output_bytes = int64_t{2} << 30;
  // Checks the ONNX file a job registers on success (the server's model check); may be null.
  std::function<Status(const std::string& path)> validate_model;
  // Called (on the service's thread) after an attempt ended and everything it left is recorded:
  // its state, its run's metrics and status, its output files. Pipelines wait on it (a step that
  // is a job goes on once its job is settled, not at the next poll). May be empty.
  std::function<void(int64_t job_id)> on_attempt_settled;
  // Who this service is among the services sharing one queue (several `dlsys server`s on one
  // PostgreSQL database): recorded on the jobs it starts. Default: the host's name (`dlsys
  // server` sets host:port).
  std::string runner;
  // Another service's RUNNING job that it has not heartbeaten for this long is taken over: its
  // service is gone, so it goes back to the queue (without spending an attempt).
  std::chrono::milliseconds runner_timeout{60000};
  // A server that requires tokens (--auth): each attempt gets its own editor token
  // "job-<id>-<attempt>" as DLSYS_TOKEN, revoked when the attempt ends (and by recover(), for
  // attempts a previous service left). Null: no tokens.
  meta::TokenStore* tokens = nullptr;
  // Where attempts run (executor.h); must outlive the service. Null: on this machine (a
  // LocalExecutor of the service's own).
  Executor* executor = nullptr;
};

class JobService {
 public:
  JobService(meta::MetaStore& store, JobServiceOptions options);
  ~JobService();

  // At startup: RUNNING jobs this service's runner started before (the previous server on this
  // host died) are re-attached when their process still runs (every attempt runs under
  // `dlsys-job-run`, which records how it ended, so this service learns it though the process is
  // not its child); the others have what is left of their process group killed (so none runs twice)
  // and go back to the queue; the interrupted attempt does not count as a retry (a train job
  // resumes from its checkpoint). Other runners' jobs are left to them (or to the takeover in
  // tick() once their heartbeats stop).
  Status recover();
  // One pass: settles the attempts that ended; asks the ones to cancel or past their run time to
  // stop and kills those past the grace or hung; heartbeats the rest in the store; queues again
  // the jobs of runners that stopped heartbeating (runner_timeout); then starts what the
  // scheduler chooses. Returns the number of jobs it started.
  Result<int> tick();
  // Waits until an attempt ends, wake() is called or `timeout` passes (on the processes' pidfds
  // and an eventfd, not a sleep).
  void wait(std::chrono::milliseconds timeout);
  // Makes the current or next wait() return at once (a job was submitted or cancelled).
  // Thread-safe.
  void wake();
  // Stops every attempt (SIGTERM, SIGKILL after `grace`) and queues their jobs again without
  // counting the attempt; an attempt that finished meanwhile is settled as usual. For a server
  // that is stopping: its train jobs checkpoint and continue when a service starts again.
  Status shutdown(std::chrono::milliseconds grace);
  // Sets options.server_url (a server that chose its port when it listened); before the first
  // tick().
  void set_server_url(std::string url) { options_.server_url = std::move(url); }
  // Sets options.runner (a server that knows its port once it listens); before recover().
  void set_runner(std::string runner) { options_.runner = std::move(runner); }
  // Who this service is on the shared queue (options.runner, the host's name by default).
  const std::string& runner() const { return options_.runner; }
  // Jobs this service is running now.
  size_t running() const { return attempts_.size(); }

 private:
  // Why the service is ending an attempt (kNone: it is not).
  enum class Ending { kNone, kCancel, kTimeout, kHung };
  struct Attempt {
    std::unique_ptr<Execution> process;
    meta::AttemptGuard guard;  // which attempt of the job it is (runner, started_at)
    std::chrono::steady_clock::time_point started;
    int64_t max_run_seconds = 0;
    std::string heartbeat_path;
    Ending ending = Ending::kNone;
    std::chrono::steady_clock::time_point kill_at;  // with kCancel/kTimeout: SIGKILL then
    int64_t threads = 1;
    int64_t log_offset = 0;  // the size of the log when this attempt started
    std::string dir;         // the job's directory
    bool command = false;    // a command job (its JSON-line metrics and outputs are collected)
    int64_t token_id = 0;    // its API token (options.tokens), revoked when it ends
  };

  // The id of job `j`'s current attempt's token (options.tokens); 0 when none.
  int64_t attempt_token_id(const meta::Job& j);
  // Revokes the token of job `j`'s current attempt (options.tokens).
  void revoke_attempt_token(const meta::Job& j);
  // recover(): takes over `j`'s attempt when the executor still has it running (Executor::
  // reattach). Whether it did.
  bool reattach(const meta::Job& j);
  // Queues `j` again after its attempt was cut short (CANCELLED when a cancel was asked for),
  // while `guard`'s attempt is still its current one.
  Result<meta::Job> requeue(const meta::Job& j, const std::string& reason,
                            const meta::AttemptGuard& guard);
  // Settles how attempt `a` of job `id` ended (`e`), then records it (record_attempt).
  Status settle(int64_t id, const Attempt& a, const ExitStatus& e);
  // Usage, metrics, the log and outputs of an attempt that ended, and the run's status when the
  // job ended (`job` as it is now). Errors are reported, never fatal to the loop.
  void record_attempt(const meta::Job& job, const Attempt& a, const ExitStatus& e);
  // A command job that succeeded: its output files become artifacts output/<name> of its run.
  void collect_outputs(const meta::Job& job, const Attempt& a);
  // on_success: registers the run's ONNX file (model.onnx, output/model.onnx, or the one .onnx
  // artifact) as a new version of spec.register_model (checked by options.validate_model), and
  // moves spec.move_alias to it.
  Status register_model(const meta::Job& job, const JobSpec& spec);
  // Copies `file` into the artifact store as artifact `path` of run `run_id` (nothing without
  // options.objects).
  Status upload_artifact(int64_t run_id, const std::string& path, const std::string& file,
                         const meta::Principal& who);
  // The job's run, made at its first start (see above); its id.
  Result<int64_t> ensure_run(const meta::Job& job, const JobSpec& spec);
  Status start_job(const meta::Job& job);
  // Whether the attempt's heartbeat file exists and is older than heartbeat_timeout.
  bool hung(const Attempt& a) const;

  meta::MetaStore& store_;
  JobServiceOptions options_;
  std::unique_ptr<Executor> own_executor_;  // a LocalExecutor when options.executor is null
  Executor* executor_ = nullptr;
  std::map<int64_t, Attempt> attempts_;    // by job id
  int wake_fd_ = -1;                       // an eventfd
  std::multiset<int64_t> retries_due_ms_;  // when the backoffs of retries settled here end
};

}  // namespace dlsys::jobs
