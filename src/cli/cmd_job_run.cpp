// `dlsys job-run --exit-file FILE -- PROGRAM ARGS...` (hidden; the training service's): runs one
// job attempt's program as its child and writes how it ended to FILE (JSON, atomically: exited,
// code, signal, cpu_seconds, max_rss_bytes), then exits with its code (128 + the signal when it
// was killed). The service starts every attempt under it, so a server that died and started
// again can re-attach to an attempt whose process lives on and still learn how it ended: the
// process is not the new server's child, so only this file can tell it (jobs/job_service.h).
//
// SIGTERM and SIGINT reach the program too (they are sent to the whole process group); this
// process outlives them to record the end: its handler only notes them.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/file_util.h"

namespace dlsys::cli {
namespace {

struct JobRunArgs {
  std::string exit_file;
  std::vector<std::string> argv;
};

void note_signal(int) {}  // the group's signal reached the program as well

int run_job(const JobRunArgs& a) {
  if (a.argv.empty()) return fail("job-run needs a program after --");
  // Handlers, not SIG_IGN: the program's exec resets them to the default.
  struct sigaction sa {};
  sa.sa_handler = note_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  std::vector<std::string> args = a.argv;
  std::vector<char*> argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return fail("job-run: cannot create the job's process");
  if (pid == 0) {
    execvp(argv[0], argv.data());
    std::fprintf(stderr, "dlsys: cannot start the job's program %s\n", argv[0]);
    _exit(127);
  }
  int st = 0;
  struct rusage ru {};
  while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {
  }
  nlohmann::json out = {
      {"exited", WIFEXITED(st) != 0},
      {"code", WIFEXITED(st) ? WEXITSTATUS(st) : 0},
      {"signal", WIFSIGNALED(st) ? WTERMSIG(st) : 0},
      {"cpu_seconds", static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                          static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6},
      {"max_rss_bytes", static_cast<int64_t>(ru.ru_maxrss) * 1024}};
  if (Status w = write_file_atomic(a.exit_file, out.dump()); !w.ok())
    std::fprintf(stderr, "dlsys job-run: %s\n", w.message().c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

void add_job_run(CLI::App& app, int* rc) {
  auto a = std::make_shared<JobRunArgs>();
  CLI::App* c = app.add_subcommand("job-run", "Run a job attempt and record how it ended");
  c->group("");  // hidden: the training service runs it
  c->add_option("--exit-file", a->exit_file, "Where to write how the program ended")->required();
  c->add_option("argv", a->argv, "The program and its arguments, after --")->required();
  c->callback([a, rc] { *rc = run_job(*a); });
}

}  // namespace dlsys::cli
