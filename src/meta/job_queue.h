// The training service's jobs as stored (issue 22): the persistent queue the scheduler
// (src/jobs) reads and the state machine every job follows, in the metadata store so that a
// server restart loses none and several schedulers never start one twice.
//
//   QUEUED --start--> RUNNING --finish--> SUCCEEDED | FAILED
//      |                 |  \--retry_or_fail--> QUEUED (attempts left; not before a backoff)
//      |                 |  \--requeue_interrupted--> QUEUED (the service restarted: not counted)
//      |                 |                      | FAILED (no attempts left)
//      |                 \--cancel--> RUNNING with cancel_requested --mark_cancelled--> CANCELLED
//      \--cancel--> CANCELLED
//   SUCCEEDED --rerun--> QUEUED (a search trial promoted to train further: meta/search_store.h)
//
// Every transition is one compare-and-set on the job's state (an UPDATE ... WHERE state = ...),
// so two callers racing for one transition see one succeed and the other FailedPrecondition.
// The spec is stored as given (JSON, jobs/job_spec.h reads it); the fields the scheduler orders
// and packs by (priority, threads, memory) are columns. Thread-safe; `db` must outlive the queue.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "meta/auth.h"
#include "meta/store_db.h"

namespace dlsys::meta {

struct Job {
  int64_t id = 0;
  std::string name, kind, owner;
  json spec;                 // as submitted (an object)
  std::string state;         // QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED
  int64_t priority = 0;      // higher first
  int64_t threads = 1;       // the capacity it takes while running
  int64_t memory_bytes = 0;  // 0: undeclared
  int64_t max_retries = 0;   // restarts allowed after failures of its process
  int64_t attempts = 0;      // starts so far
  int64_t not_before = 0;    // ms: a retried job waits until then
  int64_t run_id = 0;        // its tracked run (0: none yet)
  int64_t pid = 0;           // the process of the current attempt (0: none)
  int64_t created_at = 0, started_at = 0, ended_at = 0, heartbeat_at = 0;  // ms
  bool cancel_requested = false;
  std::string end_reason;  // why it failed, was retried or cancelled
  // What its attempts used so far (add_usage): CPU time, core time held (threads x wall time,
  // what a job is charged for) and the largest resident set of one attempt.
  int64_t cpu_ms = 0, core_ms = 0, peak_memory_bytes = 0;
  std::string runner;  // the service running its current or last attempt (its host)
};
// {"id", "name", "kind", "owner", "spec", "state", "priority", "threads", "memory_bytes",
// "max_retries", "attempts", "not_before", "run_id", "pid", "created_at", "started_at",
// "ended_at", "heartbeat_at", "cancel_requested", "end_reason", "cpu_seconds", "core_seconds",
// "peak_memory_bytes", "runner"}.
void to_json(json& j, const Job& job);

// Usage summed over a group of jobs (JobQueue::usage).
struct JobUsage {
  std::string key;  // the owner, the run id, or "model@version"
  int64_t jobs = 0, attempts = 0, core_ms = 0, cpu_ms = 0, peak_memory_bytes = 0;
};
// {"key", "jobs", "attempts", "core_seconds", "cpu_seconds", "peak_memory_bytes"}.
void to_json(json& j, const JobUsage& u);

// What a submission gives; the rest the queue sets.
struct NewJob {
  std::string name, kind;
  json spec;
  int64_t priority = 0, threads = 1, memory_bytes = 0, max_retries = 0;
};

// Which attempt of a RUNNING job a transition is meant for (the transitions below that take
// one): it applies only while the job's current attempt is the one `runner` started at
// `started_at` (JobQueue::start's time). A service that was cut off from the database while
// another took its job over thus cannot end, heartbeat or requeue the other's attempt: the
// transition is refused (FailedPrecondition). With `stale_before` > 0 also only while the job's
// last heartbeat is older than that (a takeover of an attempt whose service is gone). Default:
// any attempt.
struct AttemptGuard {
  std::string runner;
  int64_t started_at = 0;
  int64_t stale_before = 0;
  // The guard of `job`'s current attempt, as read.
  static AttemptGuard of(const Job& job) { return {job.runner, job.started_at, 0}; }
};

class JobQueue {
 public:
  explicit JobQueue(StoreDb& db) : db_(db) {}

  // Queues `j` for `who` (its owner), audited as job.submit. InvalidArgument for a name or kind
  // that is empty or too long, a spec that is not an object, threads < 1 or negative numbers.
  Result<Job> submit(const NewJob& j, const Principal& who);
  // The same inside the caller's transaction `c` (with what else it writes); the new job's id.
  Result<int64_t> submit_in(SqlConnection& c, const NewJob& j, const Principal& who);
  // Inside the caller's transaction: a SUCCEEDED job back to QUEUED with `spec` (its attempts
  // count from 0 again; run, usage and directory stay), `reason` as its end_reason.
  // FailedPrecondition when it is not SUCCEEDED.
  Status rerun_in(SqlConnection& c, int64_t id, const json& spec, const std::string& reason);
  // Job `id`; NotFound says how to list them.
  Result<Job> get(int64_t id);
  // Jobs newest first, optionally of one `state` and/or `owner`; paginated.
  Result<PageOf<Job>> list(const std::string& state, const std::string& owner, int page_size,
                           const std::string& page_token);
  // QUEUED jobs that may start at `now_ms` (not_before passed), in the order the scheduler
  // considers them: priority high to low, then oldest first.
  Result<std::vector<Job>> runnable(int64_t now_ms);
  // RUNNING jobs, oldest start first.
  Result<std::vector<Job>> running();
  // Core-seconds per owner of the attempts that ran since `since_ms` (threads x the part of
  // each attempt after since_ms; a running attempt up to now_ms): the scheduler's fair-share
  // input. Only a job's latest attempt counts: going back to the queue (a retry, an
  // interrupted attempt) clears started_at.
  Result<std::map<std::string, double>> usage_by_owner(int64_t since_ms, int64_t now_ms);

  // Adds an attempt's use to job `id`: CPU time, core time held (threads x wall), and its peak
  // resident set (the job keeps the largest). NotFound for an unknown job.
  Status add_usage(int64_t id, int64_t cpu_ms, int64_t core_ms, int64_t peak_memory_bytes);
  // Usage of the jobs created since `since_ms`, grouped `by` "owner", "run" (the job's tracked
  // run) or "model" (the model versions registered from a job's run), in key order.
  // InvalidArgument for another `by`.
  Result<std::vector<JobUsage>> usage(const std::string& by, int64_t since_ms);

  // QUEUED -> RUNNING for attempt attempts + 1 by process `pid` of the service `runner`.
  // FailedPrecondition when the job is not QUEUED (another scheduler started it, or it was
  // cancelled).
  Result<Job> start(int64_t id, int64_t pid, int64_t now_ms, const std::string& runner = "");
  // Records that a RUNNING job is alive; FailedPrecondition when it is not running.
  Status heartbeat(int64_t id, int64_t now_ms, const AttemptGuard& guard = {});
  // A RUNNING job's attempt goes on under service `runner` (its own service is gone; the attempt
  // runs where any service can watch it, a cluster's Job): the runner changes, the heartbeat is
  // `now_ms`, the attempt (its start time) stays. FailedPrecondition unless `guard` holds.
  Result<Job> adopt(int64_t id, const std::string& runner, int64_t now_ms,
                    const AttemptGuard& guard);
  // Records the process of a RUNNING job's current attempt (started after start() claimed it).
  Status set_pid(int64_t id, int64_t pid);
  // Links the job to its tracked run.
  Status set_run(int64_t id, int64_t run_id);
  // RUNNING -> SUCCEEDED or FAILED (with `reason`).
  Result<Job> finish(int64_t id, bool succeeded, const std::string& reason, int64_t now_ms,
                     const AttemptGuard& guard = {});
  // A RUNNING job whose process failed: back to QUEUED, not before now + backoff_ms, when it
  // has attempts left (attempts <= max_retries), else FAILED. `reason` is kept either way.
  Result<Job> retry_or_fail(int64_t id, const std::string& reason, int64_t now_ms,
                            int64_t backoff_ms, const AttemptGuard& guard = {});
  // A RUNNING job whose attempt was interrupted by the service itself (it restarted): back to
  // QUEUED without counting the attempt against max_retries; `reason` is kept.
  Result<Job> requeue_interrupted(int64_t id, const std::string& reason,
                                  const AttemptGuard& guard = {});
  // Cancels for `who`: a QUEUED job at once (CANCELLED), a RUNNING one by setting
  // cancel_requested (the executor stops it, then mark_cancelled). An editor cancels only their
  // own jobs (PermissionDenied otherwise), an admin any; viewers none. FailedPrecondition for a
  // job that has ended. Audited as job.cancel.
  Result<Job> cancel(int64_t id, const Principal& who);
  // RUNNING with cancel_requested -> CANCELLED, after its process stopped.
  Result<Job> mark_cancelled(int64_t id, int64_t now_ms, const AttemptGuard& guard = {});

 private:
  // Runs `update` (an UPDATE ... WHERE id = $1 AND <condition>, the WHERE last), with `guard`'s
  // conditions added to its WHERE, and returns the job as it changed it, in one statement; with
  // `who`, audits it as job.cancel in the same transaction. When no row matched: NotFound, or
  // FailedPrecondition with `not_done` and the job's state.
  Result<Job> transition(int64_t id, const std::string& update, SqlParams params,
                         const std::string& not_done, const AttemptGuard& guard = {},
                         const Principal* who = nullptr, const json& audit_detail = json::object());
  StoreDb& db_;
};

}  // namespace dlsys::meta
