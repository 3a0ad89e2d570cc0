// `dlsys train SPEC.yaml [--out DIR] [--json]`: trains the spec's model, shows progress (a bar
// on a terminal, one JSON object per line with --json), writes the run directory (metrics.jsonl,
// spec.yaml, model.onnx) and, with --server or --data-dir, records the run in the tracking
// server: params, per-epoch metrics and the model artifact. A spec's data.dataset is read from
// where the run is tracked: the data directory, or the server (its version copied into a local
// cache first).
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <variant>

#include "api/client.h"
#include "api/run_logger.h"
#include "api/services.h"
#include "cli/client_options.h"
#include "cli/commands.h"
#include "cli/dataset_cache.h"
#include "cli/model_fetch.h"
#include "core/file_util.h"
#include "core/json_get.h"
#include "core/json_util.h"
#include "core/sha256.h"
#include "data/dataset_store.h"
#include "data/manifest_check.h"
#include "dist/elastic.h"
#include "dist/process_group.h"
#include "dist/rendezvous.h"
#include "train/trainer.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;

struct TrainArgs {
  std::string spec, out, server, data_dir, experiment, token, resume;
  std::vector<std::string> overrides;  // --set FIELD=VALUE
  bool json = false, quiet = false, auto_resume = false, extend = false;
  int64_t epochs = 0, log_every = 10, checkpoint_every = -1, run_id = 0;
  int threads = 0;
  // Data-parallel: --nproc N ranks started here, or this process as --rank R of --world-size N.
  int nproc = 0, rank = -1, world_size = 0;
  std::string rendezvous, dist_host;
  double dist_timeout_s = 60;
  double heartbeat_s = 5;
  int zero = 0;
  bool no_pin = false;  // --nproc: leave the ranks unpinned even when they fill the CPUs
  // Continue on fewer workers when one fails (0: stop): --nproc restarts the others; ranks
  // started with --rendezvous re-form the group themselves.
  int min_workers = 0;
};

void progress_bar(const train::TrainEvent& e) {
  if (const auto* s = std::get_if<train::StepEvent>(&e)) {
    int64_t total = s->total_steps;
    int width = 24, fill = static_cast<int>(width * (s->step + 1) / std::max<int64_t>(1, total));
    std::fprintf(stderr,
                 "\repoch %lld [%s%s] step %lld/%lld  loss %.4f  %.0f samples/s  ETA %.0fs   ",
                 static_cast<long long>(s->epoch), std::string(fill, '#').c_str(),
                 std::string(width - fill, '.').c_str(), static_cast<long long>(s->step + 1),
                 static_cast<long long>(total), s->loss, s->samples_per_s, s->eta_s);
  } else if (const auto* v = std::get_if<train::EvalEvent>(&e)) {
    std::fprintf(stderr, "\repoch %lld: train loss %.4f  val loss %.4f",
                 static_cast<long long>(v->epoch), v->train_loss, v->metrics.val_loss);
    if (v->metrics.val_accuracy)
      std::fprintf(stderr, "  val accuracy %.4f", *v->metrics.val_accuracy);
    std::fprintf(stderr, "%40s\n", "");
  }
}

// The exit code of a run stopped by SIGTERM or SIGINT after writing its checkpoint (EX_TEMPFAIL:
// the work can go on with --resume).
constexpr int kExitStopped = 75;
// The exit code of a rank whose training failed with its group standing (its part of a batch
// could not be used, a loss that is not finite: every rank fails at the same step; or an error
// of its own, such as a checkpoint it could not write), not because a rank was lost
// (EX_SOFTWARE): the --nproc supervisor does not go on with fewer workers after it.
constexpr int kExitRunFailed = 70;

// SIGTERM or SIGINT while training: the run checkpoints after its current step and stops (a
// second SIGINT ends the process at once, as a user pressing Ctrl-C twice expects).
std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int sig) {
  if (sig == SIGINT && g_stop.load()) {
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
  g_stop.store(true);
}

// The job heartbeat (docs/jobs.md): with DLSYS_HEARTBEAT_FILE set (the training service sets
// it), the file's modification time is the run's sign of life. While the steps run, they touch
// it (after steps and validation batches, at most once a second), so a run whose steps stop is
// noticed; before the first step (reading data, planning) and after the last one (the final
// checkpoint, the export, the uploads) a thread touches it every second.
class HeartbeatFile {
 public:
  explicit HeartbeatFile(const char* path) {
    if (!path || !*path) return;
    fd_ = ::open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return;
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> l(mu_);
      while (!done_) {
        if (!stepping_) ::futimens(fd_, nullptr);
        cv_.wait_for(l, std::chrono::seconds(1));
      }
    });
  }
  ~HeartbeatFile() {
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  // From a step: the steps beat from now on.
  void beat() {
    if (fd_ < 0) return;
    if (!stepping_.load(std::memory_order_relaxed)) stepping_.store(true);
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::seconds(1)) return;
    last_ = now;
    ::futimens(fd_, nullptr);
  }
  // The steps are over: the thread beats again.
  void steps_done() {
    stepping_.store(false);
    if (fd_ >= 0) ::futimens(fd_, nullptr);
  }

 private:
  int fd_ = -1;
  std::atomic<bool> stepping_{false};
  bool done_ = false;  // guarded by mu_
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  std::chrono::steady_clock::time_point last_{};
};

// A spec's data.dataset refs resolved on the server `c`: each version is copied into the local
// cache and the refs rewritten to it; `labels` maps a cached label to the server's ("digits@v3")
// so events and lineage name the server's versions.
Status use_server_datasets(api::ApiClient& c, train::TrainSpec* spec, std::string* datasets_dir,
                           std::map<std::string, std::string>* labels) {
  std::string dir = cache_dir_of(c.where());
  DLSYS_ASSIGN_OR_RETURN(auto cache, data::DatasetStore::open(dir + "/datasets"));
  for (std::string* text : {&spec->dataset, &spec->dataset_validation}) {
    if (text->empty()) continue;
    DLSYS_ASSIGN_OR_RETURN(data::VersionRef ref, data::parse_version_ref(*text));
    std::string server_label;
    auto v = cache_server_version(c, *cache, dir + "/index", ref, &server_label);
    if (!v.ok())
      return v.status().with_context(
          fmt::format("data.dataset {} on the server at {}", *text, c.where()));
    (*labels)[v->label()] = server_label;
    *text = ref.name + "@" + v->id + (ref.split.empty() ? "" : ":" + ref.split);
  }
  *datasets_dir = dir + "/datasets";
  return Status::OK();
}

// "digits@v1:train" with its version renamed by `labels` (the cache's to the server's).
std::string server_label_of(const std::string& label,
                            const std::map<std::string, std::string>& labels) {
  size_t colon = label.find(':');
  auto it = labels.find(label.substr(0, colon));
  if (it == labels.end()) return label;
  return it->second + (colon == std::string::npos ? "" : label.substr(colon));
}

// Checks that a spec's data.dataset refs resolve in the local store `dir` (the data directory
// `data_dir`), so a missing dataset says where it was looked for.
Status check_local_datasets(const train::TrainSpec& spec, const std::string& data_dir) {
  DLSYS_ASSIGN_OR_RETURN(auto store, data::DatasetStore::open(data_dir + "/datasets"));
  for (const std::string* text : {&spec.dataset, &spec.dataset_validation}) {
    if (text->empty()) continue;
    DLSYS_ASSIGN_OR_RETURN(data::VersionRef ref, data::parse_version_ref(*text));
    auto v = store->resolve(ref);
    if (!v.ok() && v.status().code() == StatusCode::kNotFound)
      return Status::NotFound(
          "data.dataset: {} (looked in data directory {}; to train on a server's datasets give "
          "--server URL)",
          v.status().message(), data_dir);
  }
  return Status::OK();
}

// --nproc: the ranks pids, for the signal handler that passes SIGTERM/SIGINT on to them (its
// capacity is reserved before the handler is installed: it never reallocates under it), and
// whether such a signal came (then no rank is started again, --min-workers or not).
std::vector<pid_t> g_ranks;
volatile std::sig_atomic_t g_stopping = 0;
extern "C" void forward_to_ranks(int sig) {
  g_stopping = 1;
  for (pid_t p : g_ranks)
    if (p > 0) ::kill(p, sig);
}
extern "C" void kill_ranks(int) {
  for (pid_t p : g_ranks)
    if (p > 0) ::kill(p, SIGKILL);
}

// `dlsys train SPEC --nproc N`: N processes on this machine, each this command line without
// --nproc plus its --rank, --world-size N, a loopback --rendezvous (served by this process, on a
// port the kernel picks: no race for a port found free, and the store outlives any rank) and
// its share of the cores.
// Rank 0 prints and writes the run; rank R > 0 logs to OUT/rank-R.log. A rank that fails ends
// the others (they notice at once, or a stopped or unreachable rank by its silent heartbeat;
// any still alive 10 s later are killed, a stopped one at once), and the exit code and message
// name it. With --min-workers M the run goes on instead: the ranks are started again as
// the largest power of two of workers that remains (at least M), resuming from the newest
// checkpoint with the first attempt's micro-batches (so the weights do not change).
// The CPUs this process may run on, in order (empty if the kernel does not say).
std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

// `implied_micro_batches`: the train.micro_batches the first attempt's ranks set themselves
// (the spec had none), which a restart on fewer workers must keep; 0 when the spec sets it.
int run_ranks_locally(const TrainArgs& a, const std::string& out, int64_t implied_micro_batches) {
  if (a.rank >= 0 || a.world_size > 0 || !a.rendezvous.empty())
    return fail("--nproc starts every rank itself: drop --rank, --world-size and --rendezvous");
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
  std::vector<std::string> base;
  // Without --nproc and --threads: each rank gets its own --threads below.
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--nproc" || args[i] == "--threads") {
      ++i;
      continue;
    }
    if (args[i].rfind("--nproc=", 0) == 0 || args[i].rfind("--threads=", 0) == 0) continue;
    base.push_back(args[i]);
  }
  if (Status st = make_dirs(out); !st.ok()) return fail(st.message());
  const std::vector<int> cpus = allowed_cpus();
  const int cores = cpus.empty()
                        ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))
                        : static_cast<int>(cpus.size());
  g_ranks.reserve(static_cast<size_t>(a.nproc));
  g_ranks.assign(static_cast<size_t>(a.nproc), -1);
  struct sigaction fwd {};
  fwd.sa_handler = forward_to_ranks;
  sigemptyset(&fwd.sa_mask);
  ::sigaction(SIGTERM, &fwd, nullptr);
  ::sigaction(SIGINT, &fwd, nullptr);
  for (int world = a.nproc, attempt = 0;; ++attempt) {
    if (g_stopping) return kExitStopped;  // a stop came between two attempts
    // The ranks' rendezvous, served here on a loopback port the kernel picks (a fresh store
    // for each attempt: no rank reads the addresses of the attempt before).
    auto rendezvous = dist::Rendezvous::serve_on_free_port(
        "127.0.0.1", std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout_s * 1000)));
    if (!rendezvous.ok()) return fail(rendezvous.status().message());
    const int threads = a.threads > 0 ? a.threads : std::max(1, cores / world);
    // When the ranks' threads fill this process's CPUs exactly, each rank (its helper threads
    // too) keeps its own CPUs: no rank's communication or loading preempts another's compute,
    // and no compute thread migrates. Runs that leave CPUs free, or share them, are not pinned.
    const bool pin = !a.no_pin && !cpus.empty() &&
                     static_cast<size_t>(world) * static_cast<size_t>(threads) == cpus.size();
    g_ranks.assign(static_cast<size_t>(world), -1);
    for (int r = 0; r < world; ++r) {
      std::vector<std::string> argv = base;
      for (const std::string& x :
           {std::string("--rank"), std::to_string(r), std::string("--world-size"),
            std::to_string(world), std::string("--rendezvous"), (*rendezvous)->url(),
            std::string("--threads"), std::to_string(threads)})
        argv.push_back(x);
      if (attempt > 0) {
        // The survivors continue the run from its newest checkpoint, with the micro-batches
        // of the first attempt (the same weights on any world size; the same overrides, so
        // the same spec to resume).
        argv.push_back("--auto-resume");
        if (implied_micro_batches > 0)
          for (const std::string& x :
               {std::string("--set"), fmt::format("micro_batches={}", implied_micro_batches)})
            argv.push_back(x);
      }
      const std::string log = fmt::format("{}/rank-{}.log", out, r);
      pid_t p = ::fork();
      if (p < 0) {
        forward_to_ranks(SIGKILL);
        return fail(fmt::format("cannot start rank {}: {}", r, std::strerror(errno)));
      }
      if (p == 0) {
        ::setenv("DLSYS_NPROC_RANK", std::to_string(r).c_str(), 1);  // started by --nproc
        if (pin) {
          cpu_set_t mine;
          CPU_ZERO(&mine);
          for (int t = 0; t < threads; ++t)
            CPU_SET(cpus[static_cast<size_t>(r * threads + t)], &mine);
          ::sched_setaffinity(0, sizeof(mine), &mine);  // a failure leaves the rank unpinned
        }
        if (r > 0) {
          // A later attempt appends: the log of the rank that failed stays readable.
          int lf =
              ::open(log.c_str(),
                     O_WRONLY | O_CREAT | O_CLOEXEC | (attempt > 0 ? O_APPEND : O_TRUNC), 0644);
          if (lf >= 0) {
            ::dup2(lf, STDOUT_FILENO);
            ::dup2(lf, STDERR_FILENO);
          }
        }
        std::vector<char*> cargv;
        for (std::string& x : argv) cargv.push_back(x.data());
        cargv.push_back(nullptr);
        ::execv("/proc/self/exe", cargv.data());
        ::_exit(127);
      }
      g_ranks[static_cast<size_t>(r)] = p;
    }
    // Every rank's end; after the first failure the rest get 10 s to notice, then SIGKILL.
    // A rank stopped (SIGSTOP) cannot notice a failure: once there is one, it is killed at once
    // (one continued since is no longer stopped), and it is named as the cause.
    int first_failed = -1, first_code = 0;
    bool run_failed = false;  // some rank exited kExitRunFailed (whichever was reaped first)
    std::vector<int> stopped, killed_stopped;
    auto kill_stopped = [&] {
      for (int s : stopped)
        if (g_ranks[static_cast<size_t>(s)] > 0) {
          ::kill(g_ranks[static_cast<size_t>(s)], SIGKILL);
          killed_stopped.push_back(s);
        }
      stopped.clear();
    };
    for (int left = world; left > 0;) {
      int st = 0;
      pid_t p = ::waitpid(-1, &st, WUNTRACED | WCONTINUED);
      if (p < 0) {
        if (errno == EINTR) continue;
        break;
      }
      auto it = std::find(g_ranks.begin(), g_ranks.end(), p);
      if (it == g_ranks.end()) continue;
      const int r = static_cast<int>(it - g_ranks.begin());
      if (WIFCONTINUED(st)) {
        stopped.erase(std::remove(stopped.begin(), stopped.end(), r), stopped.end());
        continue;
      }
      if (WIFSTOPPED(st)) {
        if (std::find(stopped.begin(), stopped.end(), r) == stopped.end()) stopped.push_back(r);
        if (first_failed >= 0) kill_stopped();
        continue;
      }
      *it = -1;
      --left;
      const int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      if (code == kExitRunFailed) run_failed = true;
      if (code != 0 && first_failed < 0) {
        first_failed = r;
        first_code = code;
        struct sigaction k {};
        k.sa_handler = kill_ranks;
        sigemptyset(&k.sa_mask);
        ::sigaction(SIGALRM, &k, nullptr);
        ::alarm(10);
        kill_stopped();
      }
    }
    ::alarm(0);
    if (first_failed < 0) return 0;
    for (int s : killed_stopped)
      std::fprintf(stderr,
                   "dlsys train: rank %d of %d was stopped (SIGSTOP) and the others gave up on it: "
                   "it was killed\n",
                   s, world);
    std::fprintf(
        stderr, "dlsys train: rank %d of %d failed (exit code %d)%s%s\n", first_failed, world,
        first_code,
        first_failed > 0 ? fmt::format("; its log: {}/rank-{}.log", out, first_failed).c_str() : "",
        killed_stopped.empty() ? "" : ", after the stopped rank");
    if (first_code == kExitStopped) return kExitStopped;
    if (g_stopping) return first_code;  // stopped by a signal: not a rank lost
    if (run_failed) {
      // A rank's run failed with its group standing (its data, spec or loss), not a rank lost:
      // fewer workers would fail the same way. (Its peers may have exited first, saying it was
      // gone: every rank's end is known by now.)
      std::fprintf(stderr, "dlsys train: the run failed on its own, not a lost rank: stopping\n");
      return 1;
    }
    if (a.min_workers == 0) {
      std::error_code ec;
      if (std::filesystem::exists(out + "/checkpoints/latest", ec))
        std::fprintf(stderr,
                     "dlsys train: --resume %s continues the run from its newest checkpoint "
                     "(--min-workers M goes on without a failed rank by itself)\n",
                     out.c_str());
      return 1;
    }
    // Elastic: the failed rank is gone; the others continue as the largest power of two of
    // workers that remains (the micro-batches must divide evenly), from the newest checkpoint.
    int next = world > 1 ? 1 : 0;  // one worker that fails leaves none
    while (next * 2 <= world - 1) next *= 2;
    if (next < std::max(a.min_workers, 1)) {
      std::fprintf(stderr,
                   "dlsys train: %d worker%s would remain, fewer than --min-workers %d: stopping; "
                   "--resume %s continues the run\n",
                   next, next == 1 ? "" : "s", a.min_workers, out.c_str());
      return 1;
    }
    std::fprintf(stderr,
                 "dlsys train: continuing on %d worker%s from the newest checkpoint in %s "
                 "(--min-workers %d)\n",
                 next, next == 1 ? "" : "s", out.c_str(), a.min_workers);
    world = next;
  }
}

int run_train(const TrainArgs& a) {
  auto spec = train::load_train_spec(a.spec, a.overrides);
  if (!spec.ok()) return fail(spec.status().message());
  // Data-parallel without train.micro_batches: one per worker, as an override (so that a resume
  // on another worker count is refused rather than trained otherwise).
  const int workers = a.nproc > 0 ? a.nproc : a.world_size;
  int64_t implied_micro_batches = 0;  // set here rather than by the spec or --set
  if (workers > 0 && spec->micro_batches == 0 && (workers & (workers - 1)) == 0) {
    implied_micro_batches = workers;
    std::vector<std::string> more = a.overrides;
    more.push_back(fmt::format("micro_batches={}", workers));
    spec = train::load_train_spec(a.spec, more);
    if (!spec.ok()) return fail(spec.status().message());
    if ((a.nproc > 0 || (a.rank == 0 && !std::getenv("DLSYS_NPROC_RANK"))) && !a.quiet)
      std::fprintf(stderr,
                   "note: train.micro_batches is not set: %d (one per worker); set it to train "
                   "the same weights on other worker counts\n",
                   workers);
  }
  if (a.min_workers > 0 && a.nproc == 0 && a.rendezvous.empty())
    return fail(
        "--min-workers goes on with fewer workers of a data-parallel run: give --nproc N (ranks "
        "on this machine), or --rank R --world-size N --rendezvous URL (ranks anywhere)");
  if (a.min_workers > a.world_size && a.world_size > 0)
    return fail(fmt::format("--min-workers {} is more than --world-size {}: at most {}",
                            a.min_workers, a.world_size, a.world_size));
  if (a.min_workers > 0 && spec->sync_batch_norm)
    return fail(
        "--min-workers cannot go on with fewer workers under train.sync_batch_norm: each worker "
        "runs one micro-batch, so fewer workers would train another micro-batch split; drop "
        "--min-workers (a failed run resumes with --resume DIR on the same worker count)");
  if (a.min_workers > a.nproc && a.nproc > 0)
    return fail(fmt::format("--min-workers {} is more than --nproc {}: at most {}", a.min_workers,
                            a.nproc, a.nproc));
  if (a.nproc > 0) {
    std::string where = !a.resume.empty() ? a.resume : a.out.empty() ? "runs/" + spec->name : a.out;
    return run_ranks_locally(a, where, implied_micro_batches);
  }
  // One rank of a data-parallel run: join the group first (it fails fast, naming the rank
  // missing, before any data is read).
  std::unique_ptr<dist::ProcessGroup> group;
  dist::GroupOptions go;
  // Elastic without a supervisor (--min-workers, ranks started one by one): this process keeps
  // the rendezvous open across the group's generations (rank 0 of the first one serves a tcp://
  // one) and re-forms the group with the other survivors when it fails (dist/elastic.h).
  const bool elastic = a.min_workers > 0 && !std::getenv("DLSYS_NPROC_RANK");
  dist::Membership members;
  if (a.rank >= 0 || a.world_size > 0 || !a.rendezvous.empty()) {
    if (a.rank < 0 || a.world_size < 1 || a.rendezvous.empty())
      return fail(
          "a rank of a data-parallel run needs --rank R, --world-size N and "
          "--rendezvous tcp://HOST:PORT (or --nproc N to start N ranks here)");
    go.rank = a.rank;
    go.world = a.world_size;
    go.rendezvous = a.rendezvous;
    go.host = a.dist_host;
    go.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout_s * 1000));
    go.heartbeat = std::chrono::milliseconds(static_cast<int64_t>(a.heartbeat_s * 1000));
    // A rank started by --nproc reaches the store its parent serves (rank 0 serves none).
    const bool nproc_rank = std::getenv("DLSYS_NPROC_RANK") != nullptr;
    if (elastic || nproc_rank) {
      auto rv = dist::Rendezvous::open(a.rendezvous, a.rank == 0 && !nproc_rank, go.timeout);
      if (!rv.ok())
        return fail(rv.status().with_context("rank " + std::to_string(a.rank)).message());
      go.store = std::move(rv).value();
      members = dist::first_membership(a.rank, a.world_size);
    }
    auto g = dist::ProcessGroup::connect(go);
    if (!g.ok()) return fail(g.status().message());
    group = std::move(g).value();
  }
  if (a.epochs > 0) spec->epochs = a.epochs;
  if (a.checkpoint_every >= 0) spec->checkpoint_every = a.checkpoint_every;
  std::string out = a.out.empty() ? "runs/" + spec->name : a.out;
  // --auto-resume: continue the run in --out when it has a checkpoint (a retried job), else start.
  bool resume = !a.resume.empty();
  std::error_code ec;
  if (a.auto_resume && a.resume.empty() && std::filesystem::exists(out + "/checkpoints/latest", ec))
    resume = true;
  if (!a.resume.empty()) {
    if (!a.out.empty() && a.out != a.resume)
      return fail("--resume DIR continues the run in DIR; drop --out or make it the same folder");
    out = a.resume;
  }

  // Tracking, when a server or a data directory is named.
  std::unique_ptr<api::Services> backend;
  std::unique_ptr<api::ApiClient> client;
  std::unique_ptr<api::RunLogger> logger;
  bool from_env = false;
  std::string server = server_to_use(a.server, !a.data_dir.empty(), &from_env);
  std::string token = a.token;
  if (token.empty())
    if (const char* t = std::getenv("DLSYS_TOKEN")) token = t;
  // Datasets come from where the run is tracked: the server, or the data directory.
  std::string datasets_dir = data_dir_or_default(a.data_dir) + "/datasets";
  std::map<std::string, std::string> labels;  // cached version -> the server's
  if (!server.empty() || !a.data_dir.empty()) {
    if (!server.empty()) {
      auto c = connect_server(server, from_env, token, a.data_dir);
      if (!c.ok()) return fail(c.status().message());
      client = std::move(c).value();
      if (!spec->dataset.empty()) {
        Status st = use_server_datasets(*client, &*spec, &datasets_dir, &labels);
        if (!st.ok()) return fail(st.message());
      }
    } else {
      api::ServicesOptions bo;
      bo.data_dir = a.data_dir;
      bo.db_connections = 2;
      auto b = api::Services::open(bo);
      if (!b.ok()) return fail(b.status().message());
      backend = std::move(b).value();
      client = api::connect_local(*backend);
    }
    std::map<std::string, std::string> params = {{"epochs", std::to_string(spec->epochs)},
                                                 {"batch_size", std::to_string(spec->batch_size)},
                                                 {"lr", fmt::format("{}", spec->schedule.lr)},
                                                 {"seed", std::to_string(spec->seed)},
                                                 {"loss", spec->loss},
                                                 {"layers", std::to_string(spec->layers.size())}};
    // A run that may be trained further (--extend) changes its epochs: a metric ("epoch", per
    // evaluation), not a param, which is written once.
    if (a.extend) params.erase("epochs");
    if (server.empty() && !spec->dataset.empty())
      if (Status st = check_local_datasets(*spec, data_dir_or_default(a.data_dir)); !st.ok())
        return fail(st.message());
    // Rank 0 records the run; the other ranks of a data-parallel run only read from the server.
    if (a.rank <= 0) {
      auto l = a.run_id > 0 ? api::RunLogger::attach(*client, a.run_id, params, {{"spec", a.spec}})
                            : api::RunLogger::start(
                                  *client, a.experiment.empty() ? spec->name : a.experiment,
                                  spec->name, params, {{"spec", a.spec}});
      if (!l.ok()) return fail(l.status().with_context("tracking").message());
      logger = std::move(l).value();
      // The run a later rank 0 records into, should this process be lost (elastic).
      if (go.store)
        if (Status st = go.store->set("run", std::to_string(logger->run_id())); !st.ok())
          return fail(st.message());
    }
  } else if (!spec->dataset.empty()) {
    // No server, no --data-dir: the default data directory's store, said once.
    note(a.quiet, fmt::format("reading data.dataset from data directory {} (no server given)",
                              data_dir_or_default("")));
    if (Status st = check_local_datasets(*spec, data_dir_or_default("")); !st.ok())
      return fail(st.message());
  }

  // model.onnx: models:/NAME@REF: the registered version, fetched into the run directory from
  // the registry the run is tracked in.
  if (spec->onnx_path.rfind(kRegisteredModelPrefix, 0) == 0) {
    const std::string ref = spec->onnx_path.substr(std::string(kRegisteredModelPrefix).size());
    if (!client)
      return fail(fmt::format(
          "model.onnx names the registered model {}: give --server URL (or --data-dir D) to "
          "fetch it from",
          ref));
    if (Status st = make_dirs(out); !st.ok()) return fail(st.message());
    auto m = fetch_model_version(*client, ref, out);
    if (!m.ok()) return fail(m.status().with_context("model.onnx " + spec->onnx_path).message());
    spec->onnx_path = m->path;
  }
  train::TrainOptions o;
  o.out_dir = out;
  o.threads = a.threads;
  o.resume = resume;
  o.extend = a.extend;
  o.datasets_dir = datasets_dir;
  o.step_event_every = a.log_every;
  o.group = group.get();
  o.zero_stage = a.zero;
  if (a.zero > 0 && !group)
    return fail(
        "--zero 1 shards the optimizer's state over the ranks of a data-parallel run: "
        "give --nproc N (or --rank, --world-size and --rendezvous)");
  HeartbeatFile heartbeat(std::getenv("DLSYS_HEARTBEAT_FILE"));
  o.heartbeat = [&heartbeat] { heartbeat.beat(); };
  o.steps_done = [&heartbeat] { heartbeat.steps_done(); };
  o.stop_requested = [] { return g_stop.load(std::memory_order_relaxed); };
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESTART;  // a read the signal interrupts goes on: the step ends, then the stop
  sigemptyset(&sa.sa_mask);
  struct sigaction old_term {
  }, old_int{};
  ::sigaction(SIGTERM, &sa, &old_term);
  ::sigaction(SIGINT, &sa, &old_int);
  bool tty = isatty(STDERR_FILENO);
  o.on_event = [&](const train::TrainEvent& ev) {
    // Trained on a server's versions: events name them, not the local cache's copies.
    train::TrainEvent e = ev;
    if (auto* d = std::get_if<train::DoneEvent>(&e); d && !labels.empty()) {
      d->dataset = server_label_of(d->dataset, labels);
      d->validation_dataset = server_label_of(d->validation_dataset, labels);
    }
    const auto* eval = std::get_if<train::EvalEvent>(&e);
    if (a.json) {
      std::printf("%s\n", json_dump_line(train::to_json(e)).c_str());
      std::fflush(stdout);
    } else if (tty || eval) {
      progress_bar(e);
    }
    if (logger && eval) {
      (void)logger->log_metric("train_loss", eval->train_loss, eval->step);
      (void)logger->log_metric("val_loss", eval->metrics.val_loss, eval->step);
      (void)logger->log_metric("epoch", static_cast<double>(eval->epoch), eval->step);
      if (eval->metrics.val_accuracy)
        (void)logger->log_metric("val_accuracy", *eval->metrics.val_accuracy, eval->step);
      (void)logger->flush();
    }
  };
  auto r = train::train_model(*spec, o);
  // Elastic: a group that failed (a rank lost) is re-formed by the survivors, which continue
  // from the newest checkpoint; this process leaves when it is not in the new group. A group
  // that cannot be connected (a member lost in between) is re-formed again.
  Status lost = !r.ok() && elastic && group ? group->failure() : Status::OK();
  while (!lost.ok() && !g_stop.load()) {
    std::fprintf(stderr,
                 "dlsys train: rank %d of %d (rank %d of the first group) lost its group: %s\n",
                 members.rank, members.world(), a.rank, lost.message().c_str());
    dist::ReformOptions ro;
    if (group)
      for (int r : group->unheard_ranks())
        if (r < members.world()) ro.suspects.push_back(members.members[static_cast<size_t>(r)]);
    o.group = nullptr;
    group.reset();
    ro.id = a.rank;
    ro.min_workers = a.min_workers;
    ro.divides = spec->micro_batches;
    ro.power_of_two = true;
    ro.window = go.heartbeat.count() == 0
                    ? std::chrono::milliseconds(10000)
                    : std::max(std::chrono::milliseconds(3000), 2 * go.heartbeat);
    std::fprintf(stderr,
                 "dlsys train: re-forming the group with the ranks that come within %.0f s "
                 "(--min-workers %d)\n",
                 static_cast<double>(ro.window.count()) / 1000, a.min_workers);
    auto next = dist::reform(*go.store, members, ro);
    if (g_stop.load()) {
      // Asked to stop while the group re-formed: the newest checkpoint is where to continue.
      if (logger) (void)logger->finish("KILLED");
      std::fprintf(stderr,
                   "dlsys train: stopped on request while the group re-formed; --resume %s "
                   "continues the run from its newest checkpoint\n",
                   out.c_str());
      return kExitStopped;
    }
    if (!next.ok()) {
      if (logger) (void)logger->finish("FAILED");
      return fail(next.status().message());
    }
    if (next->rank < 0) {
      // The run is the new group's to record: this process leaves its status alone.
      if (logger) (void)logger->detach();
      const std::string ranks = fmt::format("{}", fmt::join(next->members, ","));
      if (next->left_out == "not needed") {
        std::fprintf(stderr,
                     "dlsys train: rank %d is not needed in generation %d of the group (ranks %s "
                     "of the first group continue): leaving the run\n",
                     a.rank, next->generation, ranks.c_str());
        return 0;
      }
      std::fprintf(stderr,
                   next->left_out == "silent"
                       ? "dlsys train: rank %d was silent to most of the others (is this machine "
                         "cut off from them?): generation %d of the group goes on without it "
                         "(ranks %s of the first group); leaving the run\n"
                       : "dlsys train: rank %d came after the survivors had formed generation %d "
                         "of the group without it (ranks %s of the first group): leaving the "
                         "run\n",
                   a.rank, next->generation, ranks.c_str());
      return 1;
    }
    members = *next;
    // The run is recorded by rank 0: one that was not rank 0 before attaches to it (tracking
    // lost is said, and the training goes on).
    if (members.rank == 0 && !logger && client) {
      auto id = go.store->get("run", std::chrono::milliseconds(0));
      Status st = id.status();
      if (st.ok() && !*id)
        st = Status::NotFound(
            "the run's id is not on the rendezvous (rank 0 of the first group had not recorded "
            "it yet)");
      if (st.ok() && *id) {
        auto l = api::RunLogger::attach(*client, std::strtoll((*id)->c_str(), nullptr, 10), {}, {});
        if (l.ok()) logger = std::move(l).value();
        st = l.status();
      }
      if (!st.ok())
        std::fprintf(stderr, "dlsys train: the tracked run is not recorded further: %s\n",
                     st.message().c_str());
    }
    go.rank = members.rank;
    go.world = members.world();
    go.generation = members.generation;
    auto g = dist::ProcessGroup::connect(go);
    if (!g.ok()) {
      lost = g.status();
      continue;
    }
    group = std::move(g).value();
    o.group = group.get();
    o.resume = std::filesystem::exists(out + "/checkpoints/latest", ec);
    std::fprintf(stderr,
                 "dlsys train: continuing as rank %d of %d (generation %d; ranks %s of the first "
                 "group) from %s\n",
                 members.rank, members.world(), members.generation,
                 fmt::format("{}", fmt::join(members.members, ",")).c_str(),
                 o.resume ? "the newest checkpoint" : "the start (no checkpoint yet)");
    r = train::train_model(*spec, o);
    lost = !r.ok() ? group->failure() : Status::OK();
  }
  heartbeat.steps_done();  // a run that failed or stopped beats by time until the process ends
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::sigaction(SIGINT, &old_int, nullptr);
  if (!r.ok()) {
    if (logger) (void)logger->finish(g_stop.load() ? "KILLED" : "FAILED");
    if (g_stop.load() && r.status().message().rfind(train::kStopped, 0) == 0) {
      // Stopped with a checkpoint: not a failure of the run, and the exit code says so.
      std::fprintf(stderr, "%s\n", r.status().message().c_str());
      return kExitStopped;
    }
    const int code = fail(r.status().message());
    return group && group->failure().ok() ? kExitRunFailed : code;
  }
  if (logger) {
    Status st = logger->log_artifact("model.onnx", r->model_path);
    // Lineage: the dataset versions this run read.
    for (const std::string& d :
         {server_label_of(r->dataset, labels), server_label_of(r->validation_dataset, labels)}) {
      if (!st.ok() || d.empty()) continue;
      auto e =
          client->call("POST", "/api/v1/lineage",
                       {{"src", {{"kind", "dataset_version"}, {"id", d.substr(0, d.find(':'))}}},
                        {"dst", {{"kind", "run"}, {"id", std::to_string(logger->run_id())}}},
                        {"relation", d.substr(d.find(':') + 1)}});
      if (!e.ok()) st = e.status();
    }
    if (st.ok()) st = logger->finish("FINISHED");
    if (!st.ok()) return fail(st.with_context("tracking").message());
  }
  if (!a.json) {
    std::printf("trained %s: %lld epoch%s, %lld step%s in %.1f s", spec->name.c_str(),
                static_cast<long long>(r->epochs), r->epochs == 1 ? "" : "s",
                static_cast<long long>(r->steps), r->steps == 1 ? "" : "s", r->seconds);
    if (spec->loss == "cross_entropy") std::printf(", validation accuracy %.4f", r->val_accuracy);
    std::printf("\nmodel: %s\n", r->model_path.c_str());
    if (group)
      std::printf(
          "rank %d of %d; optimizer state here: %.3f MiB%s\n", group->rank(), group->world(),
          static_cast<double>(r->optimizer_state_bytes) / (1 << 20),
          r->optimizer_shards > 1
              ? fmt::format(" (sharded over {} ranks: --zero 1)", r->optimizer_shards).c_str()
              : "");
    const auto& d = r->done.distributed;
    if (d && d->buckets > 0)
      std::printf(
          "gradients: %lld bucket%s of about %.0f KiB (%s), all-reduced during the backward pass: "
          "%.2f s of all-reduce, %.2f s of it not hidden behind compute (%.2f s)\n",
          static_cast<long long>(d->buckets), d->buckets == 1 ? "" : "s",
          static_cast<double>(d->bucket_bytes) / 1024,
          d->bucket_bytes_measured
              ? fmt::format(
                    "chosen for a link of {:.0f} us and {:.0f} MB/s; train.bucket_kib sets it",
                    d->link_latency_s * 1e6, d->link_bytes_per_s / 1e6)
                    .c_str()
              : "train.bucket_kib",
          d->allreduce_s, d->exposed_allreduce_s, d->compute_s);
    if (a.threads == 0 && r->threads == 1)
      std::printf("threads: 1 (a small model: %.0f MFLOP per step; --threads N to choose)\n",
                  r->step_flops / 1e6);
    if (logger)
      std::printf("tracked as run %lld (%s)\n", static_cast<long long>(logger->run_id()),
                  client->where().c_str());
  }
  return 0;
}

}  // namespace

void add_train(CLI::App& app, int* rc) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* c = app.add_subcommand("train", "Train the model of a YAML spec and export it as ONNX");
  c->footer(
      "Every field of the spec, with its type, default and an example: docs/spec.md. Examples: "
      "examples/digits/*.yaml.\nSIGTERM or Ctrl-C checkpoints after the current step and exits "
      "with code 75; --resume DIR continues exactly where it stopped. A rank of a data-parallel "
      "run whose training failed with its group standing (its part of a batch, a loss that is "
      "not finite: every rank fails at that step) exits with code 70, and --nproc then does not "
      "go on with fewer workers.");
  c->add_option("spec", a->spec, "Training spec, e.g. examples/digits/mlp.yaml")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("--out", a->out, "Run directory (default runs/<spec name>)");
  c->add_flag("--json", a->json, "One JSON object per line: step, eval and done events");
  c->add_option("--epochs", a->epochs, "Override train.epochs");
  c->add_option("--set", a->overrides,
                "Override a spec setting: FIELD=VALUE, e.g. --set lr=0.01 --set "
                "train.batch_size=128 (a dotted path from docs/spec.md, or its last part when "
                "unique; VALUE is YAML). Repeatable");
  c->add_option("--resume", a->resume, "Continue the run in DIR from its newest checkpoint");
  c->add_flag("--auto-resume", a->auto_resume,
              "Continue the run in --out from its newest checkpoint when it has one, else start "
              "it (what a retried job does)");
  c->add_flag("--extend", a->extend,
              "With --resume or --auto-resume: continue a checkpoint written with another "
              "train.epochs (train a finished run further; not with a cosine schedule)");
  c->add_option("--checkpoint-every", a->checkpoint_every,
                "Steps between checkpoints (overrides train.checkpoint_every; 0: only at the end)");
  c->add_option("--log-every", a->log_every, "Steps between step events")->capture_default_str();
  c->add_option("--threads", a->threads,
                "Threads (default: 1 for a model under 100 MFLOP per step, else all cores)");
  c->add_option("--server", a->server,
                "Record the run in this tracking server and read data.dataset from it (or "
                "$DLSYS_SERVER)");
  c->add_option("--data-dir", a->data_dir,
                "Record the run in this data directory and read data.dataset from it (no server)");
  c->add_option("--experiment", a->experiment, "Experiment to record in (default: the spec name)");
  c->add_option("--token", a->token, "API token for --server (or $DLSYS_TOKEN)");
  c->add_option("--run-id", a->run_id,
                "Record into this existing run instead of a new one (the training service "
                "passes its job's run, so that retries continue one run)")
      ->check(CLI::PositiveNumber);
  c->add_option("--nproc", a->nproc,
                "Train data-parallel on N processes on this machine (N a power of two dividing "
                "train.micro_batches, which is N when not set; the weights are bit-identical for "
                "every such N). Rank R > 0 logs to OUT/rank-R.log. When the ranks' threads fill "
                "the CPUs this command may use, each rank is pinned to its own (--no-pin: not)")
      ->check(CLI::Range(1, 1024));
  c->add_option("--min-workers", a->min_workers,
                "When a rank fails, continue on fewer workers, if at least this many, from the "
                "newest checkpoint (the same weights). --nproc restarts the others as the largest "
                "power of two that remains; ranks started with --rendezvous re-form the group by "
                "themselves (--out on storage they share; file:// survives losing rank 0, "
                "tcp:// does not); 0: stop")
      ->check(CLI::Range(0, 1024));
  c->add_flag("--no-pin", a->no_pin,
              "With --nproc: do not pin each rank to its own CPUs, even when they fill them");
  c->add_option("--rank", a->rank, "This process's rank in a data-parallel run of many machines")
      ->check(CLI::Range(0, 1 << 20));
  c->add_option("--world-size", a->world_size, "The number of ranks of the run")
      ->check(CLI::Range(1, 1 << 20));
  c->add_option("--rendezvous", a->rendezvous,
                "Where the ranks meet: tcp://HOST:PORT (rank 0 listens there) or "
                "file:///SHARED/FOLDER");
  c->add_option("--zero", a->zero,
                "1: shard the optimizer's state over the ranks (ZeRO stage 1; the same weights, "
                "less memory per rank)")
      ->check(CLI::Range(0, 1));
  c->add_option("--dist-host", a->dist_host,
                "The address other ranks reach this one at (default: the local address of the "
                "route to the rendezvous host)");
  c->add_option("--dist-timeout-s", a->dist_timeout_s,
                "The longest a rank waits for another: to join, and for each message")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--heartbeat-s", a->heartbeat_s,
                "A rank whose heartbeat is silent this long (stopped, hung, or its machine cut "
                "off) is given up by the others, which fail naming it; 0 turns the heartbeat off")
      ->capture_default_str()
      ->check([](const std::string& v) {
        double s = 0;
        try {
          s = std::stod(v);
        } catch (...) {
          return std::string("--heartbeat-s takes a number of seconds");
        }
        return s == 0 || (s >= 0.5 && s <= 3600)
                   ? std::string()
                   : std::string(
                         "--heartbeat-s is 0 (off) or 0.5 to 3600 s (the ranks' beats "
                         "are a fifth of it apart, at most a second)");
      });
  c->add_flag("--quiet", a->quiet,
              "No note on stderr saying which data directory data.dataset is read from");
  c->callback([a, rc] { *rc = run_train(*a); });
}

}  // namespace dlsys::cli
