// One job attempt as a child process (issue 22's local executor): started in its own process
// group, with none of the parent's other open files or sockets, its stdout and stderr appended
// to a log file, OMP_NUM_THREADS set to the job's
// threads, and its address space limited to the job's memory (RLIMIT_AS: an allocation past it
// fails in the child, which then exits, instead of the machine swapping). Stopped with SIGTERM to
// the whole group, then SIGKILL after a grace period. Every wait has a deadline and waits on
// the process itself (a pidfd), not on a sleep loop.
//
// Thread-safety: one ChildProcess is used by one thread at a time. Destroying a running one
// kills its group (SIGKILL) and reaps it: no process outlives its owner unnoticed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "jobs/execution.h"

namespace dlsys::jobs {

struct ProcessSpec {
  std::vector<std::string> argv;           // argv[0] is looked up on PATH when it has no '/'
  std::map<std::string, std::string> env;  // added to (or replacing in) the parent's
  std::string log_path;                    // stdout and stderr are appended here ...
  std::string stdout_path;                 // ... but stdout goes here (truncated) when set
  std::string workdir;                     // "" : the parent's
  int64_t threads = 1;                     // OMP_NUM_THREADS
  int64_t memory_bytes = 0;                // RLIMIT_AS; 0: none
  // Where `dlsys-job-run` (the argv's wrapper, when the caller uses it) writes how the program
  // ended: read instead of the wrapper's own status when it is there.
  std::string exit_file;
};

class ChildProcess : public Execution {
 public:
  // Starts `spec`. InvalidArgument for an empty argv; IOError when the log cannot be opened or
  // the process cannot be created; a program that does not exist exits with code 127 (and says
  // so in the log), as a shell would.
  static Result<std::unique_ptr<ChildProcess>> start(const ProcessSpec& spec);
  // Takes over a running process that another process started (a job attempt a previous server
  // left: run under `dlsys-job-run`, so that `exit_file` says how it ended). It is not this
  // process's child: its end is seen on a pidfd (or by its pid disappearing) and read from
  // `exit_file`; without that file it counts as killed (SIGKILL), its usage unknown.
  // NotFound when `pid` is not running.
  static Result<std::unique_ptr<ChildProcess>> adopt(pid_t pid, const std::string& exit_file);
  ~ChildProcess() override;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  int64_t pid() const override { return pid_; }
  // A descriptor that becomes readable when the process ends (its pidfd), for poll() over many
  // processes; -1 when the kernel has none.
  int wait_fd() const override { return pidfd_; }
  // How it ended, once it has (reaped then); nullopt while it runs.
  std::optional<ExitStatus> poll() override;
  // Waits until it ends or `timeout` passes.
  std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout) override;
  // SIGTERM to its process group, then SIGKILL when it has not ended after `grace`; returns how
  // it ended (the group's other processes are killed with it).
  ExitStatus stop(std::chrono::milliseconds grace) override;
  // Sends `sig` to its process group without waiting (SIGTERM to ask, SIGKILL to end); nothing
  // once it has been reaped.
  void signal(int sig) override;

 private:
  ChildProcess(pid_t pid, int pidfd, std::string exit_file, bool adopted)
      : pid_(pid), pidfd_(pidfd), exit_file_(std::move(exit_file)), adopted_(adopted) {}
  // The exit file's record (nullopt when it is missing or unreadable).
  std::optional<ExitStatus> read_exit_file() const;
  pid_t pid_;
  int pidfd_;  // -1: the kernel has none (then waits poll waitpid every 5 ms)
  std::string exit_file_;
  bool adopted_ = false;  // not a child: never waited for
  std::optional<ExitStatus> status_;
};

}  // namespace dlsys::jobs
