// dlsys: a deep learning system in one program. This is the command line's front door.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <unistd.h>
#include <exception>

#include "cli/commands.h"
#include "cli/completion.h"
#include "cli/suggest.h"

namespace dlsys::cli {

int fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.1f} {}", b, units[u]);
}

std::string format_time_ms(const nlohmann::json& ms) {
  if (!ms.is_number()) return "-";
  std::time_t t = static_cast<std::time_t>(ms.get<int64_t>() / 1000);
  std::tm tm;
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

Result<std::map<std::string, int64_t>> parse_dims(const std::vector<std::string>& specs) {
  std::map<std::string, int64_t> out;
  for (const std::string& d : specs) {
    size_t eq = d.find('=');
    if (eq == std::string::npos || eq == 0)
      return Status::Invalid("--dim '{}' needs the form NAME=VALUE, e.g. --dim seq=128", d);
    try {
      size_t used = 0;
      int64_t v = std::stoll(d.substr(eq + 1), &used);
      if (used != d.size() - eq - 1 || v < 0) throw std::invalid_argument("bad");
      out[d.substr(0, eq)] = v;
    } catch (...) {
      return Status::Invalid("--dim '{}': '{}' is not a non-negative integer", d, d.substr(eq + 1));
    }
  }
  return out;
}

}  // namespace dlsys::cli

// OpenMP's waiting. libgomp spins up to 300,000 times at every barrier before it sleeps, which
// collapses on a shared machine: the digits MLP trained 50-100x slower with 2 threads on 2 cores
// while one other CPU-bound process ran (bench/train/threads.sh, docs/benchmarks.md). libgomp
// reads OMP_WAIT_POLICY once, when it loads, and glibc resets the environment that an earlier
// setenv could change, so the commands that compute run themselves again once with
// OMP_WAIT_POLICY=passive (about 50 ms) unless the user chose a policy (OMP_WAIT_POLICY,
// GOMP_SPINCOUNT) or asked for libgomp's own (DLSYS_OMP_DEFAULTS=1).
void set_openmp_waiting(int argc, char** argv) {
  if (argc < 2 || std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT") ||
      std::getenv("DLSYS_OMP_DEFAULTS"))
    return;
  static const char* const kComputing[] = {"train",   "run",      "bench",
                                           "profile", "quantize", "server"};
  bool computes = false;
  for (const char* c : kComputing) computes = computes || std::strcmp(argv[1], c) == 0;
  if (!computes) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only when it fails: then libgomp's defaults apply
}

int main(int argc, char** argv) {
  set_openmp_waiting(argc, argv);
  CLI::App app{"dlsys: run, train, track and serve deep learning models on one program"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dlsys 0.1.0");
  int rc = 0;
  dlsys::cli::add_inspect(app, &rc);
  dlsys::cli::add_run(app, &rc);
  dlsys::cli::add_bench(app, &rc);
  dlsys::cli::add_profile(app, &rc);
  dlsys::cli::add_quantize(app, &rc);
  dlsys::cli::add_train(app, &rc);
  dlsys::cli::add_server(app, &rc);
  dlsys::cli::add_runs(app, &rc);
  dlsys::cli::add_models(app, &rc);
  dlsys::cli::add_deploy(app, &rc);
  dlsys::cli::add_artifacts(app, &rc);
  dlsys::cli::add_tokens(app, &rc);
  dlsys::cli::add_data(app, &rc);
  dlsys::cli::add_jobs(app, &rc);
  dlsys::cli::add_search(app, &rc);
  dlsys::cli::add_pipelines(app, &rc);
  dlsys::cli::add_monitor(app, &rc);
  dlsys::cli::add_notebook(app, &rc);
  dlsys::cli::add_predict(app, &rc);
  dlsys::cli::add_completion(app, &rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    if (code != 0)
      for (const std::string& s : dlsys::cli::suggest_corrections(app, argc, argv))
        std::fprintf(stderr, "%s\n", s.c_str());
    return code;
  } catch (const std::exception& e) {
    // Commands return Status; an exception here is a library's that a call site did not catch
    // (docs/engineering.md). Say so in one line instead of std::terminate's core dump.
    std::fprintf(stderr,
                 "error: %s\n(an unexpected internal error: this is a bug in dlsys; please report "
                 "it with the command you ran)\n",
                 e.what());
    return 70;
  }
  return rc;
}
