// The training service's loop (issue 22), local executor: it reads the queue (meta/job_queue),
// decides what to start (scheduler.h), runs each attempt as a ChildProcess, and settles how each
// ended: success, a retry after a backoff while attempts last, a failure, or a cancel. Today it
// runs `command` jobs (train and predict jobs come with the trainer's job mode); a job of
// another kind fails with a message that says so.
//
// A job attempt gets a directory <work_dir>/<id>/ with its log (`log`, stdout and stderr of every
// attempt) and an output directory (`output/`), and the environment DLSYS_JOB_ID,
// DLSYS_OUTPUT_DIR, DLSYS_ATTEMPT and OMP_NUM_THREADS.
//
// Ownership and threading: the service keeps the ChildProcess of every attempt it started; one
// thread calls tick() and wait(). `store` must outlive it. Destroying it kills what it started
// (their jobs stay RUNNING in the store, and recover() requeues them when a service starts).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "jobs/child_process.h"
#include "jobs/scheduler.h"
#include "meta/meta_store.h"

namespace dlsys::jobs {

struct JobServiceOptions {
  SchedulerConfig scheduler;
  std::string work_dir;                         // per-job directories under it
  std::chrono::milliseconds stop_grace{10000};  // SIGTERM to SIGKILL on cancel
  int64_t retry_backoff_ms = 1000;              // doubled per attempt
  int64_t usage_window_ms = 24 * 3600 * 1000;   // fair share looks back this far
};

class JobService {
 public:
  JobService(meta::MetaStore& store, JobServiceOptions options);
  ~JobService();

  // At startup: RUNNING jobs in the store that no process of this service runs (the previous
  // server died with them) have what is left of their process group killed (so none runs
  // twice) and go back to the queue; the interrupted attempt does not count as a retry.
  Status recover();
  // One pass: settles the attempts that ended, stops the ones asked to cancel, heartbeats the
  // rest, then starts what the scheduler chooses. Returns the number of jobs it started.
  Result<int> tick();
  // Waits until an attempt ends or `timeout` passes (on the processes' pidfds, not a sleep).
  void wait(std::chrono::milliseconds timeout);
  // Jobs this service is running now.
  size_t running() const { return children_.size(); }

 private:
  Status settle(int64_t id, const ExitStatus& e);
  Status start_job(const meta::Job& job);

  meta::MetaStore& store_;
  JobServiceOptions options_;
  std::map<int64_t, std::unique_ptr<ChildProcess>> children_;  // by job id
};

}  // namespace dlsys::jobs
