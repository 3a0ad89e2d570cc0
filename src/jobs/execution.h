// One attempt of a job, running somewhere (executor.h): how it ended (ExitStatus) and what the
// job service does with it while it runs (Execution). A local child process (child_process.h) is
// one; a Kubernetes Job (k8s_executor.h) is another.
//
// Threading: an Execution is used by one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace dlsys::jobs {

// How a process ended.
struct ExitStatus {
  bool exited = false;  // exited normally (code), else killed by `signal`
  int code = 0;
  int signal = 0;
  double cpu_seconds = 0;     // user + system time of the process (and children it waited for)
  int64_t max_rss_bytes = 0;  // its largest resident set
  std::string detail;         // what the executor knows more ("OOMKilled"), or ""
  bool ok() const { return exited && code == 0; }
  // "exit code 3", "killed by signal 9 (SIGKILL)", and the detail: "exit code 137 (OOMKilled)".
  std::string describe() const;
};

// One attempt running somewhere. Destroying it forgets it: a local one is killed with it (no
// process outlives the service unnoticed); a cluster's goes on (the next service re-attaches).
class Execution {
 public:
  virtual ~Execution() = default;
  // The process id recorded on the job (JobQueue::set_pid): the local process group; 0 when the
  // attempt runs elsewhere.
  virtual int64_t pid() const = 0;
  // A descriptor that becomes readable when the attempt ends, for poll() over many; -1: none,
  // look again after recheck_after().
  virtual int wait_fd() const = 0;
  // Without a wait_fd: how long a wait may last before poll() can tell more.
  virtual std::chrono::milliseconds recheck_after() const { return std::chrono::milliseconds(5); }
  // How it ended, once it has; nullopt while it runs (or while its state cannot be read).
  virtual std::optional<ExitStatus> poll() = 0;
  // Waits until it ends or `timeout` passes.
  virtual std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout) = 0;
  // Asks it to stop (SIGTERM, then SIGKILL after `grace`) and waits for the end (a deadline
  // bounds the wait); how it ended.
  virtual ExitStatus stop(std::chrono::milliseconds grace) = 0;
  // SIGTERM: asks it to stop (a trainer checkpoints); SIGKILL: ends it now. No wait.
  virtual void signal(int sig) = 0;
  // Whether it goes on when the service stops (a cluster's Job): a stopping service then leaves
  // it RUNNING for the next service to re-attach, instead of stopping it.
  virtual bool outlives_service() const { return false; }
};

}  // namespace dlsys::jobs
