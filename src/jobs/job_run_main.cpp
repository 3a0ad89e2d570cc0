// dlsys-job-run --exit-file FILE -- PROGRAM ARGS...: runs one job attempt's program as its child
// and writes how it ended to FILE (JSON, atomically: exited, code, signal, cpu_seconds,
// max_rss_bytes), then exits with its code (128 + the signal when it was killed). The training
// service starts every attempt under it (jobs/job_service.h), so a server that died and started
// again can re-attach to an attempt whose process lives on and still learn how it ended: the
// process is not the new server's child, so only this file can tell it.
//
// A program of its own, not a `dlsys` subcommand: it starts in about a millisecond (libc only),
// where starting dlsys (its libraries, the ONNX schemas) costs tens of milliseconds a job.
//
// SIGTERM and SIGINT reach the program too (they are sent to the whole process group); this
// process outlives them to record the end: its handler only notes them.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

void note_signal(int) {}  // the group's signal reached the program as well

// Writes `text` to `path` through a temporary file renamed into place: a reader sees the whole
// record or none.
bool write_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = ::fsync(fd) == 0 && ok;
  ok = ::close(fd) == 0 && ok;
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || std::strcmp(argv[1], "--exit-file") != 0 || std::strcmp(argv[3], "--") != 0) {
    std::fprintf(stderr,
                 "usage: dlsys-job-run --exit-file FILE -- PROGRAM [ARGS...] (the training "
                 "service runs it; see docs/jobs.md)\n");
    return 2;
  }
  const std::string exit_file = argv[2];
  // SIGTERM and SIGINT are held until each side is ready for them: a stop asked for right after
  // the start must reach the program (pending in the child, it arrives once the child has its
  // default handling back), and must not end this process before it has recorded the end.
  sigset_t stops, old;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  sigprocmask(SIG_BLOCK, &stops, &old);
  const pid_t pid = fork();
  if (pid < 0) {
    std::fprintf(stderr, "dlsys-job-run: cannot create the job's process: %s\n",
                 std::strerror(errno));
    return 126;
  }
  if (pid == 0) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigprocmask(SIG_SETMASK, &old, nullptr);  // a stop already pending ends the child here
    execvp(argv[4], argv + 4);
    std::fprintf(stderr, "dlsys: cannot start the job's program %s: %s\n", argv[4],
                 std::strerror(errno));
    _exit(127);
  }
  // Handlers, not SIG_IGN: this process outlives a stop of the group to record the end.
  struct sigaction sa {};
  sa.sa_handler = note_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  sigprocmask(SIG_SETMASK, &old, nullptr);
  int st = 0;
  struct rusage ru {};
  while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {
  }
  const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                     static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  char record[256];
  std::snprintf(record, sizeof record,
                "{\"exited\":%s,\"code\":%d,\"signal\":%d,\"cpu_seconds\":%.6f,"
                "\"max_rss_bytes\":%lld}",
                WIFEXITED(st) ? "true" : "false", WIFEXITED(st) ? WEXITSTATUS(st) : 0,
                WIFSIGNALED(st) ? WTERMSIG(st) : 0, cpu,
                static_cast<long long>(ru.ru_maxrss) * 1024);
  if (!write_atomic(exit_file, record))
    std::fprintf(stderr, "dlsys-job-run: cannot write %s: %s\n", exit_file.c_str(),
                 std::strerror(errno));
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
