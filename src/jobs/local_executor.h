// The local executor (issue 22): each attempt is a ChildProcess on this machine, run under
// `dlsys-job-run` (the program next to dlsys, jobs/job_run_main.cpp), which records how the
// attempt ended in <dir>/exit-<attempt>, so that a service that died and started again re-attaches
// to an attempt still running and learns how it ends though it is not its child.
//
// Threading: used by the job service's one thread (executor.h).
#pragma once

#include <string>

#include "jobs/executor.h"

namespace dlsys::jobs {

class LocalExecutor : public Executor {
 public:
  // `work_dir`: the service's job directories (<work_dir>/<id>); `job_runner`: the path of
  // dlsys-job-run.
  LocalExecutor(std::string work_dir, std::string job_runner)
      : work_dir_(std::move(work_dir)), job_runner_(std::move(job_runner)) {}

  std::string name() const override { return "local"; }
  // The attempt's program under dlsys-job-run, in its own process group, stdout and stderr
  // appended to the job's log (ChildProcess::start's errors).
  Result<std::unique_ptr<Execution>> start(const meta::Job& job, const JobSpec& spec,
                                           const AttemptSpec& attempt) override;
  // The process of job.pid when it still runs under this attempt's dlsys-job-run (checked on
  // /proc/PID/cmdline, so that a pid reused by another program is not taken).
  std::unique_ptr<Execution> reattach(const meta::Job& job) override;
  // SIGKILL to what is left of the attempt's process group, when it ran on this host in this
  // boot (start() records the boot id in <dir>/boot-<attempt>).
  void end_leftover(const meta::Job& job, bool same_host) override;

  // Where dlsys-job-run records how job `j`'s current attempt ended.
  std::string exit_file(const meta::Job& j) const;
  // Where start() records the boot the attempt runs in.
  std::string boot_file(const meta::Job& j) const;

 private:
  std::string work_dir_;
  std::string job_runner_;
};

}  // namespace dlsys::jobs
