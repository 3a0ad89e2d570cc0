#include "jobs/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/file_util.h"

extern char** environ;

namespace dlsys::jobs {
namespace {

ExitStatus from_wait_status(int st) {
  ExitStatus e;
  if (WIFEXITED(st)) {
    e.exited = true;
    e.code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    e.signal = WTERMSIG(st);
  }
  return e;
}

int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
    return static_cast<int>(fd);
  }
#endif
  return -1;
}

}  // namespace

std::string ExitStatus::describe() const {
  std::string how;
  if (exited) {
    how = fmt::format("exit code {}", code);
  } else {
    const char* name = sigabbrev_np(signal);
    how = fmt::format("killed by signal {}{}", signal,
                      name ? fmt::format(" (SIG{})", name) : std::string());
  }
  return detail.empty() ? how : fmt::format("{} ({})", how, detail);
}

Result<std::unique_ptr<ChildProcess>> ChildProcess::start(const ProcessSpec& spec) {
  if (spec.argv.empty()) return Status::Invalid("a job process needs a program to run");
  // Everything the child needs is built before fork: between fork and exec it only makes
  // async-signal-safe calls.
  std::vector<std::string> env_strings;
  std::map<std::string, std::string> env = spec.env;
  env["OMP_NUM_THREADS"] = std::to_string(spec.threads);
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    if (!env.count(key)) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  int log = open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0)
    return Status::IOError("cannot open the job log {}: {}", spec.log_path, std::strerror(errno));
  int out = log;
  if (!spec.stdout_path.empty()) {
    out = open(spec.stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
      int err = errno;
      close(log);
      return Status::IOError("cannot open {}: {}", spec.stdout_path, std::strerror(err));
    }
  }
  int null_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  rlimit as{static_cast<rlim_t>(spec.memory_bytes), static_cast<rlim_t>(spec.memory_bytes)};
  const char* workdir = spec.workdir.empty() ? nullptr : spec.workdir.c_str();
  const char* program = argv[0];
  static const char kNoProgram[] = "dlsys: cannot start the job's program\n";
  // A stop sent to the new group before its program runs must not be caught by a copy of this
  // process's handlers: held over the fork, then pending in the child until its defaults are back.
  sigset_t stops, old_mask;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stops, &old_mask);
  pid_t pid = fork();
  if (pid != 0) pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  if (pid < 0) {
    int err = errno;
    close(log);
    if (out != log) close(out);
    if (null_in >= 0) close(null_in);
    return Status::IOError("cannot create the job's process: {}", std::strerror(err));
  }
  if (pid == 0) {
    setpgid(0, 0);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if (null_in >= 0) dup2(null_in, 0);
    dup2(out, 1);
    dup2(log, 2);
    // Nothing else of the server's: its listening socket and connections (which an orphaned
    // job would keep open, holding the port a restarted server needs) and its files.
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
      for (int fd = 3; fd < 65536; ++fd) close(fd);
    if (spec.memory_bytes > 0) setrlimit(RLIMIT_AS, &as);
    if (workdir && chdir(workdir) != 0) _exit(126);
    // execvpe searches PATH like a shell; a missing program exits 127 as a shell's would.
    execvpe(program, argv.data(), envp.data());
    ssize_t unused = write(2, kNoProgram, sizeof(kNoProgram) - 1);
    (void)unused;
    _exit(127);
  }
  setpgid(pid, pid);  // also from the parent: the group exists before anyone signals it
  close(log);
  if (out != log) close(out);
  if (null_in >= 0) close(null_in);
  return std::unique_ptr<ChildProcess>(
      new ChildProcess(pid, open_pidfd(pid), spec.exit_file, false));
}

Result<std::unique_ptr<ChildProcess>> ChildProcess::adopt(pid_t pid, const std::string& exit_file) {
  if (pid <= 0 || kill(pid, 0) != 0)
    return Status::NotFound("process {} is not running", static_cast<long long>(pid));
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, open_pidfd(pid), exit_file, true));
}

std::optional<ExitStatus> ChildProcess::read_exit_file() const {
  if (exit_file_.empty()) return std::nullopt;
  auto text = read_file(exit_file_);
  if (!text.ok()) return std::nullopt;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  ExitStatus e;
  e.exited = j.value("exited", false);
  e.code = j.value("code", 0);
  e.signal = j.value("signal", 0);
  e.cpu_seconds = j.value("cpu_seconds", 0.0);
  e.max_rss_bytes = j.value("max_rss_bytes", int64_t{0});
  if (!e.exited && e.signal == 0) return std::nullopt;
  return e;
}

ChildProcess::~ChildProcess() {
  if (!status_) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    int st = 0;
    while (!adopted_ && waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  if (pidfd_ >= 0) close(pidfd_);
}

std::optional<ExitStatus> ChildProcess::poll() {
  if (status_) return status_;
  if (adopted_) {
    // Ended: its pidfd is readable (or, without one, its pid is gone once its parent reaped it).
    bool ended = false;
    if (pidfd_ >= 0) {
      pollfd p{pidfd_, POLLIN, 0};
      ended = ::poll(&p, 1, 0) > 0;
    } else {
      ended = kill(pid_, 0) != 0 && errno == ESRCH;
    }
    if (!ended) return std::nullopt;
    if (auto e = read_exit_file()) {
      status_ = e;
    } else {
      status_ = ExitStatus{};
      status_->signal = SIGKILL;  // ended without a record: killed with its wrapper
    }
    return status_;
  }
  int st = 0;
  struct rusage ru {};
  pid_t r = wait4(pid_, &st, WNOHANG, &ru);
  if (r == pid_) {
    status_ = from_wait_status(st);
    // What the process and the children it waited for used.
    status_->cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
    status_->max_rss_bytes = static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux: KiB
    // The program's own end, as its wrapper recorded it (the wrapper killed with it: none).
    if (auto e = read_exit_file()) status_ = e;
  }
  return status_;
}

std::optional<ExitStatus> ChildProcess::wait_for(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!poll()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    // Rounded up: a wait never ends before its deadline.
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    if (pidfd_ >= 0) {
      // Readable when the process ends.
      pollfd p{pidfd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    } else {
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(5)));
    }
  }
  return status_;
}

void ChildProcess::signal(int sig) {
  if (status_) return;  // reaped: the pid may belong to someone else now
  kill(-pid_, sig);
  if (sig == SIGKILL) kill(pid_, SIGKILL);
}

ExitStatus ChildProcess::stop(std::chrono::milliseconds grace) {
  if (poll()) return *status_;
  kill(-pid_, SIGTERM);
  if (auto s = wait_for(grace)) return *s;
  kill(-pid_, SIGKILL);
  kill(pid_, SIGKILL);
  // SIGKILL cannot be ignored: the process ends; the deadline only guards a kernel stuck in I/O.
  if (auto s = wait_for(std::chrono::seconds(30))) return *s;
  ExitStatus unknown;
  unknown.signal = SIGKILL;
  return unknown;
}

}  // namespace dlsys::jobs
