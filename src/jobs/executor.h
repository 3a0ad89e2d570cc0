// Where a job's attempts run (issue 22, "an executor interface"): the job service (job_service.h)
// decides what runs and settles how it ended; an Executor starts the attempt somewhere and hands
// back an Execution that the service polls, signals and waits on.
//
// Two executors: LocalExecutor (local_executor.h: a child process on this machine under
// `dlsys-job-run`) and KubernetesExecutor (k8s_executor.h: a `batch/v1` Job that `kubectl`
// applies and watches). Both run the same program (job_process.h) with the same environment, and
// write the job's log, heartbeat and outputs to the same job directory (shared with the pods
// through a volume).
//
// Threading: an Executor and its Executions are used by the service's one thread.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "jobs/child_process.h"
#include "jobs/execution.h"
#include "jobs/job_spec.h"
#include "meta/job_queue.h"

namespace dlsys::jobs {

// What one attempt runs: the program and its environment (job_process.h, plus the executor's
// token), and where its log and exit record go.
struct AttemptSpec {
  ProcessSpec process;  // argv (unwrapped), env (DLSYS_TOKEN included), log, workdir, limits
  std::string dir;      // the job's directory (<work_dir>/<id>)
};

class Executor {
 public:
  virtual ~Executor() = default;
  // "local" or "kubernetes" (logs and `dlsys server`'s banner).
  virtual std::string name() const = 0;
  // Starts attempt `job.attempts` of `job` (parsed spec `spec`). An error leaves nothing running.
  virtual Result<std::unique_ptr<Execution>> start(const meta::Job& job, const JobSpec& spec,
                                                   const AttemptSpec& attempt) = 0;
  // At a service's start: the attempt that a previous service of this runner started for `job`
  // (RUNNING in the store) when it is still there, taken over; null when it is gone.
  virtual std::unique_ptr<Execution> reattach(const meta::Job& job) = 0;
  // Whether an attempt still running after its service is gone can be taken over by another
  // service (a cluster's Job can; a process on another host cannot): a takeover then adopts it
  // instead of ending it and starting the job again.
  virtual bool adopts_across_runners() const { return false; }
  // Ends what may be left of `job`'s current attempt (not re-attached, or taken over from a
  // runner that stopped heartbeating), so that it never runs twice. `same_host`: the attempt was
  // started on this machine (a local process can only be killed there).
  virtual void end_leftover(const meta::Job& job, bool same_host) = 0;
};

}  // namespace dlsys::jobs
