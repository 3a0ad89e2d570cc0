#include "jobs/local_executor.h"

#include <signal.h>

#include <filesystem>

#include "core/file_util.h"

namespace dlsys::jobs {

namespace fs = std::filesystem;

namespace {

// This boot of the machine (a pid means nothing across a reboot).
std::string boot_id() {
  auto id = read_file("/proc/sys/kernel/random/boot_id");
  if (!id.ok()) return "";
  while (!id->empty() && (id->back() == '\n' || id->back() == ' ')) id->pop_back();
  return *id;
}

}  // namespace

std::string LocalExecutor::boot_file(const meta::Job& j) const {
  return (fs::path(work_dir_) / std::to_string(j.id) / fmt::format("boot-{}", j.attempts)).string();
}

std::string LocalExecutor::exit_file(const meta::Job& j) const {
  return (fs::path(work_dir_) / std::to_string(j.id) / fmt::format("exit-{}", j.attempts)).string();
}

Result<std::unique_ptr<Execution>> LocalExecutor::start(const meta::Job& job, const JobSpec&,
                                                        const AttemptSpec& attempt) {
  ProcessSpec p = attempt.process;
  // Under `dlsys-job-run`, which records how the program ended: a server that dies and starts
  // again re-attaches to the attempt and still learns it.
  p.exit_file = exit_file(job);
  std::error_code ec;
  fs::remove(p.exit_file, ec);
  // The boot it runs in: after a reboot its pid (and process group) may be someone else's.
  DLSYS_RETURN_IF_ERROR(write_file_atomic(boot_file(job), boot_id()));
  p.argv = {job_runner_, "--exit-file", p.exit_file, "--"};
  p.argv.insert(p.argv.end(), attempt.process.argv.begin(), attempt.process.argv.end());
  DLSYS_ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> child, ChildProcess::start(p));
  return std::unique_ptr<Execution>(std::move(child));
}

std::unique_ptr<Execution> LocalExecutor::reattach(const meta::Job& j) {
  if (j.pid <= 0) return nullptr;
  // Only the wrapper this service's runner started for this very attempt: a pid reused by
  // another program since has another command line.
  auto cmdline = read_file(fmt::format("/proc/{}/cmdline", j.pid));
  if (!cmdline.ok()) return nullptr;
  for (char& c : *cmdline)
    if (c == '\0') c = ' ';
  if (cmdline->find("dlsys-job-run --exit-file " + exit_file(j) + " ") == std::string::npos)
    return nullptr;
  auto child = ChildProcess::adopt(static_cast<pid_t>(j.pid), exit_file(j));
  if (!child.ok()) return nullptr;
  return std::unique_ptr<Execution>(std::move(child).value());
}

void LocalExecutor::end_leftover(const meta::Job& j, bool same_host) {
  if (!same_host || j.pid <= 0) return;
  // Its process group, which this host's previous service started: only in the same boot (a
  // reboot ended it already, and its pid may now be another program's).
  auto then = read_file(boot_file(j));
  if (then.ok() && *then != boot_id()) return;
  kill(-static_cast<pid_t>(j.pid), SIGKILL);
}

}  // namespace dlsys::jobs
