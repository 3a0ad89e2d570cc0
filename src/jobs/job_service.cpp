#include "jobs/job_service.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

#include "core/file_util.h"
#include "jobs/job_process.h"
#include "jobs/job_spec.h"
#include "jobs/local_executor.h"
#include "jobs/run_model.h"

namespace dlsys::jobs {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

std::string self_exe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("dlsys") : p.string();
}

}  // namespace

JobService::JobService(meta::MetaStore& store, JobServiceOptions options)
    : store_(store), options_(std::move(options)) {
  if (options_.dlsys_exe.empty()) options_.dlsys_exe = self_exe();
  // A job runs in its own directory: paths it is given must not depend on the server's.
  std::error_code ec;
  if (!options_.work_dir.empty())
    options_.work_dir = fs::absolute(options_.work_dir, ec).lexically_normal().string();
  if (!options_.data_dir.empty())
    options_.data_dir = fs::absolute(options_.data_dir, ec).lexically_normal().string();
  if (options_.runner.empty()) options_.runner = host_name();
  executor_ = options_.executor;
  if (!executor_) {
    // The wrapper every attempt runs under: dlsys-job-run next to dlsys.
    own_executor_ = std::make_unique<LocalExecutor>(
        options_.work_dir, (fs::path(options_.dlsys_exe).parent_path() / "dlsys-job-run").string());
    executor_ = own_executor_.get();
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

JobService::~JobService() {
  attempts_.clear();  // a ChildProcess kills and reaps its process; a cluster's Job goes on
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

namespace {
const meta::Principal kService{"dlsys-jobs", meta::Role::kAdmin};  // what the service audits as
constexpr int kMaxOutputFiles = 10000;             // a command job's output files kept
constexpr uintmax_t kMaxLogArtifact = 256u << 20;  // a log larger stays in the job's folder
}  // namespace

int64_t JobService::attempt_token_id(const meta::Job& j) {
  if (!options_.tokens) return 0;
  auto tokens = options_.tokens->list_tokens();
  if (!tokens.ok()) return 0;
  const std::string name = fmt::format("job-{}-{}", j.id, j.attempts);
  for (const meta::TokenInfo& t : *tokens)
    if (!t.revoked && t.name == name && t.created_by == kService.name) return t.id;
  return 0;
}

void JobService::revoke_attempt_token(const meta::Job& j) {
  // The token of the attempt that was cut short (other servers' attempts keep theirs).
  if (int64_t id = attempt_token_id(j); id > 0) (void)options_.tokens->revoke_token(id, kService);
}

bool JobService::reattach(const meta::Job& j) {
  auto spec = job_spec_from_json(j.spec, fmt::format("job {}", j.id));
  if (!spec.ok()) return false;
  std::unique_ptr<Execution> running = executor_->reattach(j);
  if (!running) return false;
  const fs::path dir = fs::path(options_.work_dir) / std::to_string(j.id);
  Attempt a;
  a.process = std::move(running);
  a.guard = meta::AttemptGuard::of(j);
  // Its run time counts from its start, not from this service's.
  a.started =
      Clock::now() - std::chrono::milliseconds(std::max<int64_t>(0, now_ms() - j.started_at));
  a.max_run_seconds = spec->max_run_seconds;
  a.heartbeat_path = (dir / "heartbeat").string();
  a.threads = j.threads;
  std::error_code ec;
  const std::string log = (dir / "log").string();
  // A command job's metric lines are read from its attempt's start, which start_job kept
  // (log-start-<attempt>); without that record, the whole log for a first attempt, and for a
  // later one what it prints from now on.
  auto kept = read_file((dir / fmt::format("log-start-{}", j.attempts)).string());
  char* end = nullptr;
  const long long start = kept.ok() ? std::strtoll(kept->c_str(), &end, 10) : -1;
  if (kept.ok() && end != kept->c_str() && start >= 0) {
    a.log_offset = start;
  } else {
    a.log_offset =
        j.attempts <= 1 || !fs::exists(log, ec) ? 0 : static_cast<int64_t>(fs::file_size(log, ec));
  }
  a.dir = dir.string();
  a.command = spec->kind == JobKind::kCommand;
  a.token_id = attempt_token_id(j);
  attempts_[j.id] = std::move(a);
  return true;
}

// A RUNNING job whose attempt was cut short by a service's end: back to the queue, or CANCELLED
// when a cancel was asked for meanwhile; only while `guard`'s attempt is still the job's.
Result<meta::Job> JobService::requeue(const meta::Job& j, const std::string& reason,
                                      const meta::AttemptGuard& guard) {
  Result<meta::Job> r = j.cancel_requested ? store_.jobs().mark_cancelled(j.id, now_ms(), guard)
                                           : store_.jobs().requeue_interrupted(j.id, reason, guard);
  if (r.ok()) revoke_attempt_token(j);
  return r;
}

Status JobService::recover() {
  DLSYS_ASSIGN_OR_RETURN(auto running, store_.jobs().running());
  for (const meta::Job& j : running) {
    if (attempts_.count(j.id)) continue;
    // Another runner's (another server on the same database): not ours to touch. A job of no
    // runner was started before runners were recorded: treated as this host's.
    if (!j.runner.empty() && j.runner != options_.runner) continue;
    // Its attempt belonged to this runner's service that is gone. Still running (a process under
    // its wrapper, a cluster's Job): this service takes it over, and it goes on undisturbed.
    if (reattach(j)) {
      (void)store_.jobs().heartbeat(j.id, now_ms(), meta::AttemptGuard::of(j));
      std::fprintf(stderr, "jobs: job %lld: re-attached to its running attempt %lld (%s)\n",
                   static_cast<long long>(j.id), static_cast<long long>(j.attempts),
                   executor_->name().c_str());
      continue;
    }
    // Else stop whatever is left of it so that it never runs twice, then queue it again (or
    // fail it when its attempts are spent).
    executor_->end_leftover(j, true);
    auto r = requeue(j, "the service restarted while it ran", meta::AttemptGuard::of(j));
    if (!r.ok() && r.status().code() != StatusCode::kFailedPrecondition) return r.status();
  }
  return Status::OK();
}

Status JobService::settle(int64_t id, const Attempt& a, const ExitStatus& e) {
  const Ending ending = a.ending;
  DLSYS_ASSIGN_OR_RETURN(meta::Job j, store_.jobs().get(id));
  // Another service took the job over while this one was cut off: its attempt is not this one,
  // and nothing of this one is recorded (the guards below refuse it in the same statement, should
  // a takeover happen between this read and them).
  if (j.runner != a.guard.runner || j.started_at != a.guard.started_at)
    return Status::FailedPrecondition(
        "job {} was taken over by {} while this attempt ran: its end is not recorded", id,
        j.runner.empty() ? "another service" : j.runner);
  const meta::AttemptGuard& guard = a.guard;
  Result<meta::Job> r = Status::OK();
  const int64_t backoff = options_.retry_backoff_ms << std::min<int64_t>(20, j.attempts - 1);
  if (ending == Ending::kCancel || j.cancel_requested) {
    r = store_.jobs().mark_cancelled(id, now_ms(), guard);
  } else if (ending == Ending::kTimeout) {
    auto spec = job_spec_from_json(j.spec, "job");
    r = store_.jobs().finish(
        id, false,
        fmt::format("ran longer than its max_run_time ({} s) and was stopped ({})",
                    spec.ok() ? spec->max_run_seconds : 0, e.describe()),
        now_ms(), guard);
  } else if (ending == Ending::kHung) {
    r = store_.jobs().retry_or_fail(
        id,
        fmt::format(
            "hung: its heartbeat stopped for {} s, so it was killed",
            std::chrono::duration_cast<std::chrono::seconds>(options_.heartbeat_timeout).count()),
        now_ms(), backoff, guard);
  } else if (e.ok()) {
    // What a success leaves: a command job's output files, then the model on_success registers.
    // A registration that fails fails the job (it did not do all it was asked).
    Status done = Status::OK();
    if (a.command && j.run_id > 0) collect_outputs(j, a);
    if (auto spec = job_spec_from_json(j.spec, "job"); spec.ok()) done = register_model(j, *spec);
    r = done.ok()
            ? store_.jobs().finish(id, true, "", now_ms(), guard)
            : store_.jobs().finish(id, false, done.with_context("on_success.register").message(),
                                   now_ms(), guard);
  } else {
    r = store_.jobs().retry_or_fail(id, e.describe(), now_ms(), backoff, guard);
  }
  // A retry waits for its backoff: wait() must not sleep past it.
  if (r.ok() && r->state == "QUEUED" && r->not_before > 0) retries_due_ms_.insert(r->not_before);
  if (r.ok()) record_attempt(*r, a, e);
  if (r.ok() && options_.on_attempt_settled) options_.on_attempt_settled(id);
  return r.status();
}

namespace {

// The metrics a command printed as JSON lines: {"metric": NAME, "value": NUMBER, "step": N}.
std::vector<meta::MetricPoint> printed_metrics(const std::string& text) {
  std::vector<meta::MetricPoint> out;
  for (size_t b = 0, e; b < text.size(); b = e + 1) {
    e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    if (e - b < 2 || text[b] != '{') continue;
    json j = json::parse(text.begin() + static_cast<std::ptrdiff_t>(b),
                         text.begin() + static_cast<std::ptrdiff_t>(e), nullptr, false);
    if (!j.is_object() || !j.contains("metric") || !j["metric"].is_string() ||
        !j.contains("value") || !j["value"].is_number())
      continue;
    meta::MetricPoint p;
    p.key = j["metric"].get<std::string>();
    p.value = j["value"].get<double>();
    if (!std::isfinite(p.value) || p.key.empty() || p.key.size() > 250) continue;
    if (j.contains("step") && j["step"].is_number_integer()) p.step = j["step"].get<int64_t>();
    out.push_back(std::move(p));
    if (out.size() >= 100000) break;  // a bound on what one attempt may log this way
  }
  return out;
}

}  // namespace

Status JobService::upload_artifact(int64_t run_id, const std::string& path, const std::string& file,
                                   const meta::Principal& who) {
  if (!options_.objects) return Status::OK();
  std::string tmp = options_.objects->temp_path();
  std::error_code ec;
  fs::copy_file(file, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) return Status::IOError("cannot copy {} for the run: {}", file, ec.message());
  DLSYS_ASSIGN_OR_RETURN(meta::StoredObject o, options_.objects->put_file(tmp));
  return store_.runs().record_artifact(run_id, {path, o.sha256, o.size}, who);
}

void JobService::record_attempt(const meta::Job& job, const Attempt& a, const ExitStatus& e) {
  auto report = [&job](const Status& st, const char* what) {
    if (!st.ok())
      std::fprintf(stderr, "jobs: job %lld: %s: %s\n", static_cast<long long>(job.id), what,
                   st.message().c_str());
  };
  if (options_.tokens && a.token_id > 0)
    report(options_.tokens->revoke_token(a.token_id, kService), "revoking its token");
  const double wall_s = std::chrono::duration<double>(Clock::now() - a.started).count();
  const int64_t cpu_ms = static_cast<int64_t>(e.cpu_seconds * 1000);
  const int64_t core_ms = static_cast<int64_t>(wall_s * 1000) * a.threads;
  report(store_.jobs().add_usage(job.id, cpu_ms, core_ms, e.max_rss_bytes), "recording its usage");
  if (job.run_id <= 0) return;
  const meta::Principal who{job.owner, meta::Role::kEditor};
  std::vector<meta::MetricPoint> m = {
      {"job.cpu_seconds", e.cpu_seconds, job.attempts, 0},
      {"job.core_seconds", static_cast<double>(core_ms) / 1000.0, job.attempts, 0},
      {"job.peak_memory_mb", static_cast<double>(e.max_rss_bytes) / (1 << 20), job.attempts, 0}};
  const std::string log = a.dir + "/log";
  if (a.command) {
    // What this attempt printed (from where its part of the log starts; at most 64 MiB of it).
    std::error_code ec;
    int64_t size = static_cast<int64_t>(fs::file_size(log, ec));
    if (!ec && size > a.log_offset) {
      std::string text(static_cast<size_t>(std::min<int64_t>(size - a.log_offset, 64 << 20)), 0);
      if (std::FILE* f = std::fopen(log.c_str(), "rb")) {
        std::fseek(f, static_cast<long>(a.log_offset), SEEK_SET);
        text.resize(std::fread(text.data(), 1, text.size(), f));
        std::fclose(f);
        for (auto& p : printed_metrics(text)) m.push_back(std::move(p));
      }
    }
  }
  report(store_.runs().log_batch(job.run_id, m, {}, {}, who), "logging its metrics");
  {
    std::error_code ec;
    const auto size = fs::file_size(log, ec);
    if (!ec && size <= kMaxLogArtifact)
      report(upload_artifact(job.run_id, "job.log", log, who), "uploading its log");
    else if (!ec)
      std::fprintf(stderr,
                   "jobs: job %lld: its log (%llu bytes) is too large for an artifact; "
                   "`dlsys jobs logs` reads it\n",
                   static_cast<long long>(job.id), static_cast<unsigned long long>(size));
  }
  // The run ends with the job (a retry continues it).
  const char* status = job.state == "SUCCEEDED"   ? "FINISHED"
                       : job.state == "FAILED"    ? "FAILED"
                       : job.state == "CANCELLED" ? "KILLED"
                                                  : nullptr;
  if (status) report(store_.runs().update_run(job.run_id, status, who).status(), "ending its run");
}

void JobService::collect_outputs(const meta::Job& job, const Attempt& a) {
  const meta::Principal who{job.owner, meta::Role::kEditor};
  const fs::path root = a.dir + "/output";
  // Whatever the job left there: unreadable folders are skipped, links are not followed, and
  // nothing the file system throws reaches the loop.
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  int files = 0;
  int64_t bytes = 0;
  // What is not kept is said where the job's owner reads: its log.
  auto tell = [&](const std::string& line) {
    std::fprintf(stderr, "jobs: job %lld: %s\n", static_cast<long long>(job.id), line.c_str());
    if (FILE* f = std::fopen((a.dir + "/log").c_str(), "ab")) {
      std::fprintf(f, "dlsys jobs: %s\n", line.c_str());
      std::fclose(f);
    }
  };
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code fe;
    const fs::file_status st = it->symlink_status(fe);
    if (fe || !fs::is_regular_file(st)) continue;
    if (++files > kMaxOutputFiles) {
      tell(fmt::format("more than {} output files; the rest are not kept as artifacts",
                       kMaxOutputFiles));
      break;
    }
    const std::string rel = it->path().lexically_relative(root).generic_string();
    const int64_t size = static_cast<int64_t>(fs::file_size(it->path(), fe));
    if (fe) continue;
    if (bytes + size > options_.max_output_bytes) {
      tell(
          fmt::format("output/{} ({} bytes) is not kept as an artifact: the job's outputs are "
                      "limited to {} bytes",
                      rel, size, options_.max_output_bytes));
      continue;
    }
    bytes += size;
    Status up = upload_artifact(job.run_id, "output/" + rel, it->path().string(), who);
    if (!up.ok())
      std::fprintf(stderr, "jobs: job %lld: uploading output %s: %s\n",
                   static_cast<long long>(job.id), rel.c_str(), up.message().c_str());
  }
}

Status JobService::register_model(const meta::Job& job, const JobSpec& spec) {
  if (spec.register_model.empty()) return Status::OK();
  return register_run_model(store_, options_.objects, options_.validate_model,
                            {job.run_id, job.owner, spec.register_model, spec.move_alias,
                             fmt::format("registered by job {}", job.id)})
      .status();
}

Result<int64_t> JobService::ensure_run(const meta::Job& job, const JobSpec& spec) {
  if (job.run_id > 0) return job.run_id;
  const meta::Principal who{job.owner, meta::Role::kEditor};
  DLSYS_ASSIGN_OR_RETURN(
      meta::Experiment x,
      store_.runs().ensure_experiment(spec.experiment.empty() ? job.name : spec.experiment, who));
  std::vector<meta::KeyValue> params;
  // A train job's trainer logs the spec's values itself (the job's among them).
  if (spec.kind != JobKind::kTrain)
    for (const auto& [k, v] : spec.hyperparameters.items()) params.push_back({k, set_value(v)});
  DLSYS_ASSIGN_OR_RETURN(meta::Run run,
                         store_.runs().create_run(x.id, job.name, params,
                                                  {{"dlsys.job_id", std::to_string(job.id)},
                                                   {"dlsys.owner", job.owner},
                                                   {"dlsys.job_kind", job_kind_name(spec.kind)}},
                                                  who));
  DLSYS_RETURN_IF_ERROR(store_.jobs().set_run(job.id, run.id));
  return run.id;
}

Status JobService::start_job(const meta::Job& job) {
  DLSYS_ASSIGN_OR_RETURN(meta::Job j, store_.jobs().start(job.id, 0, now_ms(), options_.runner));
  auto fail = [&](const Status& st) {
    return store_.jobs().finish(j.id, false, st.message(), now_ms()).status();
  };
  auto spec = job_spec_from_json(j.spec, fmt::format("job {}", j.id));
  if (!spec.ok()) return fail(spec.status());
  const fs::path dir = fs::path(options_.work_dir) / std::to_string(j.id);
  auto run_id = ensure_run(j, *spec);
  if (!run_id.ok()) return fail(run_id.status().with_context("creating the job's run"));
  j.run_id = *run_id;
  JobProcessContext ctx;
  ctx.dlsys_exe = options_.dlsys_exe;
  ctx.server_url = options_.server_url;
  ctx.data_dir = options_.data_dir;
  ctx.checkpoint_every = options_.checkpoint_every;
  ctx.dir = dir.string();
  ctx.run_id = *run_id;
  AttemptSpec at;
  at.dir = dir.string();
  ProcessSpec& p = at.process;
  auto argv = job_argv(j, *spec, ctx);
  if (!argv.ok()) return fail(argv.status());
  p.argv = std::move(argv).value();
  std::error_code ec;
  fs::create_directories(dir / "output", ec);
  const std::string heartbeat = (dir / "heartbeat").string();
  fs::remove(heartbeat, ec);  // an earlier attempt's would count as a stopped heartbeat
  p.log_path = (dir / "log").string();
  const int64_t log_offset =
      fs::exists(p.log_path, ec) ? static_cast<int64_t>(fs::file_size(p.log_path, ec)) : 0;
  // Where this attempt's part of the log begins, for a service that re-attaches to it.
  (void)write_file_atomic((dir / fmt::format("log-start-{}", j.attempts)).string(),
                          std::to_string(log_offset));
  p.workdir = spec->working_dir.empty() ? dir.string() : spec->working_dir;
  p.threads = j.threads;
  p.memory_bytes = j.memory_bytes;
  p.env = job_env(j, *spec, ctx);
  if (spec->has_dataset && spec->kind == JobKind::kCommand)
    fs::create_directories(dir / "data", ec);
  int64_t token_id = 0;
  if (options_.tokens) {
    auto t = options_.tokens->create_token(fmt::format("job-{}-{}", j.id, j.attempts),
                                           meta::Role::kEditor, kService);
    if (!t.ok()) return fail(t.status().with_context("making the job's API token"));
    token_id = t->info.id;
    p.env["DLSYS_TOKEN"] = t->token;
  }
  auto child = !fs::is_directory(dir / "output")
                   ? Result<std::unique_ptr<Execution>>(Status::IOError(
                         "cannot create the job's directory {}", (dir / "output").string()))
                   : executor_->start(j, *spec, at);
  if (!child.ok() && token_id > 0) (void)options_.tokens->revoke_token(token_id, kService);
  if (!child.ok())
    return store_.jobs()
        .retry_or_fail(j.id, child.status().message(), now_ms(), options_.retry_backoff_ms)
        .status();
  if (Status st = store_.jobs().set_pid(j.id, (*child)->pid()); !st.ok()) {
    // The job changed under us (cancelled meanwhile): the attempt ends, and so does its token.
    (*child)->signal(SIGKILL);
    if (token_id > 0) (void)options_.tokens->revoke_token(token_id, kService);
    return st.code() == StatusCode::kFailedPrecondition ? Status::OK() : st;
  }
  Attempt a;
  a.process = std::move(child).value();
  a.guard = meta::AttemptGuard::of(j);
  a.started = Clock::now();
  a.threads = j.threads;
  a.dir = dir.string();
  a.command = spec->kind == JobKind::kCommand;
  a.log_offset = log_offset;
  a.token_id = token_id;
  a.max_run_seconds = spec->max_run_seconds;
  a.heartbeat_path = heartbeat;
  attempts_[j.id] = std::move(a);
  return Status::OK();
}

bool JobService::hung(const Attempt& a) const {
  struct stat st {};
  if (::stat(a.heartbeat_path.c_str(), &st) != 0) return false;  // never beat: judged by exit
  auto mtime = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
  return std::chrono::system_clock::now() - mtime > options_.heartbeat_timeout;
}

Result<int> JobService::tick() {
  // Attempts that ended.
  for (auto it = attempts_.begin(); it != attempts_.end();) {
    if (auto e = it->second.process->poll()) {
      // An attempt that ended leaves this service whatever settling it says: an error here
      // (its job taken over meanwhile, the database away) must not stop the loop.
      Status st = settle(it->first, it->second, *e);
      if (!st.ok()) {
        std::fprintf(stderr, "jobs: job %lld: settling its attempt: %s\n",
                     static_cast<long long>(it->first), st.message().c_str());
        // Not recorded, so its token was not revoked there.
        if (options_.tokens && it->second.token_id > 0)
          (void)options_.tokens->revoke_token(it->second.token_id, kService);
      }
      it = attempts_.erase(it);
    } else {
      ++it;
    }
  }
  // Cancels asked for, run times passed, hangs; heartbeats for the rest: one read of the
  // running jobs.
  DLSYS_ASSIGN_OR_RETURN(auto running, store_.jobs().running());
  const auto now = Clock::now();
  const int64_t wall_now = now_ms();
  // This service's attempts whose job is no longer theirs: another service took it over while
  // this one could not heartbeat (cut off from the database for longer than runner_timeout).
  // Theirs is the attempt that counts: this one is killed, and nothing of it is recorded.
  std::set<int64_t> still_ours;
  for (const meta::Job& j : running)
    if (auto it = attempts_.find(j.id); it != attempts_.end() &&
                                        j.runner == it->second.guard.runner &&
                                        j.started_at == it->second.guard.started_at)
      still_ours.insert(j.id);
  for (auto it = attempts_.begin(); it != attempts_.end();) {
    if (still_ours.count(it->first)) {
      ++it;
      continue;
    }
    std::fprintf(stderr,
                 "jobs: job %lld: taken over by another service while this one was cut off; "
                 "its attempt here is killed\n",
                 static_cast<long long>(it->first));
    it->second.process->signal(SIGKILL);
    if (options_.tokens && it->second.token_id > 0)
      (void)options_.tokens->revoke_token(it->second.token_id, kService);
    it = attempts_.erase(it);
  }
  for (const meta::Job& j : running) {
    auto found = attempts_.find(j.id);
    if (found == attempts_.end()) {
      // Another service's. When it has stopped heartbeating the job, that service is gone (a
      // server scaled down or dead): the job goes back to the queue. Its process, if any is left,
      // is on that service's host, which kills it when it starts again (recover()).
      if (j.runner != options_.runner &&
          wall_now - j.heartbeat_at > options_.runner_timeout.count()) {
        // Then a cluster's Job of that runner is deleted here; a process on its host is killed
        // by that runner when it comes back, or by that host's next service.
        // Only while it is still that attempt and still silent (its runner may have come back
        // since the read).
        meta::AttemptGuard guard = meta::AttemptGuard::of(j);
        guard.stale_before = wall_now - options_.runner_timeout.count() + 1;
        // A cluster's Job goes on without its service: this one adopts it as it runs (no new
        // start, no lost work), when it is still there.
        if (executor_->adopts_across_runners()) {
          auto adopted = store_.jobs().adopt(j.id, options_.runner, wall_now, guard);
          if (!adopted.ok() && adopted.status().code() != StatusCode::kFailedPrecondition)
            return adopted.status();
          if (!adopted.ok()) continue;  // its runner came back, or another service was first
          if (reattach(*adopted)) {
            std::fprintf(stderr, "jobs: job %lld: adopted from %s, whose heartbeats stopped\n",
                         static_cast<long long>(j.id), j.runner.c_str());
            continue;
          }
          guard = meta::AttemptGuard::of(*adopted);  // gone: queued again below, as ours
        }
        auto r = requeue(j,
                         fmt::format("taken over: its runner {} stopped heartbeating it for {} s",
                                     j.runner.empty() ? "(unknown)" : j.runner,
                                     (wall_now - j.heartbeat_at) / 1000),
                         guard);
        if (!r.ok() && r.status().code() != StatusCode::kFailedPrecondition) return r.status();
        if (r.ok()) executor_->end_leftover(j, false);
      }
      continue;
    }
    Attempt& a = found->second;
    if (a.ending == Ending::kNone) {
      if (j.cancel_requested) {
        a.ending = Ending::kCancel;
      } else if (a.max_run_seconds > 0 &&
                 now - a.started > std::chrono::seconds(a.max_run_seconds)) {
        a.ending = Ending::kTimeout;
      } else if (hung(a)) {
        // Not asked: a hung process would not answer SIGTERM anyway, and its retry resumes
        // from the last checkpoint.
        a.ending = Ending::kHung;
        a.process->signal(SIGKILL);
        continue;
      }
      if (a.ending != Ending::kNone) {
        a.process->signal(SIGTERM);
        a.kill_at = now + options_.stop_grace;
        continue;
      }
      // Refused when another service has just taken the job over: the next tick kills this one.
      Status beat = store_.jobs().heartbeat(j.id, now_ms(), a.guard);
      if (!beat.ok() && beat.code() != StatusCode::kFailedPrecondition) return beat;
      // Its run is alive as long as the job is (a command job may never call the API itself).
      if (j.run_id > 0) (void)store_.runs().heartbeat(j.run_id);
    } else if (a.ending != Ending::kHung && now >= a.kill_at) {
      a.process->signal(SIGKILL);
    }
  }
  // Retries whose backoff ended are runnable now.
  retries_due_ms_.erase(retries_due_ms_.begin(), retries_due_ms_.upper_bound(now_ms()));
  DLSYS_ASSIGN_OR_RETURN(auto queued, store_.jobs().runnable(now_ms()));
  if (queued.empty()) return 0;
  const int64_t now_wall = now_ms();
  DLSYS_ASSIGN_OR_RETURN(
      auto usage, store_.jobs().usage_by_owner(now_wall - options_.usage_window_ms, now_wall));
  // This service's capacity holds its own jobs (jobs still stopping included until their
  // processes end); other servers' jobs run on their machines. Quotas count per server too.
  running.erase(std::remove_if(running.begin(), running.end(),
                               [this](const meta::Job& j) { return !attempts_.count(j.id); }),
                running.end());
  Decision d = decide(queued, running, options_.scheduler, usage);
  int started = 0;
  for (int64_t id : d.start) {
    auto it =
        std::find_if(queued.begin(), queued.end(), [&](const meta::Job& j) { return j.id == id; });
    Status st = start_job(*it);
    // Another scheduler took it first: not an error of this one.
    if (st.code() == StatusCode::kFailedPrecondition) continue;
    DLSYS_RETURN_IF_ERROR(st);
    ++started;
  }
  return started;
}

void JobService::wait(std::chrono::milliseconds timeout) {
  std::vector<pollfd> fds;
  if (wake_fd_ >= 0) fds.push_back({wake_fd_, POLLIN, 0});
  // Stopping attempts need a look when their grace ends; hung ones within the timeout.
  auto until = Clock::now() + timeout;
  for (const auto& [id, a] : attempts_) {
    if (a.process->wait_fd() < 0) {  // nothing to wait on: look again when it can tell more
      until = std::min(until, Clock::now() + a.process->recheck_after());
      continue;
    }
    if (a.ending == Ending::kCancel || a.ending == Ending::kTimeout)
      until = std::min(until, a.kill_at);
    fds.push_back({a.process->wait_fd(), POLLIN, 0});
  }
  if (!retries_due_ms_.empty()) {
    // The next retry's backoff ends then (wall-clock milliseconds, as stored).
    until = std::min(until, Clock::now() + std::chrono::milliseconds(std::max<int64_t>(
                                               0, *retries_due_ms_.begin() - now_ms())));
  }
  auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
  if (left.count() > 0) ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
  uint64_t n = 0;
  if (wake_fd_ >= 0) (void)!::read(wake_fd_, &n, sizeof n);  // clears a wake (non-blocking)
}

void JobService::wake() {
  uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof one);
}

Status JobService::shutdown(std::chrono::milliseconds grace) {
  Status first = Status::OK();
  auto keep = [&first](const Status& st) {
    if (first.ok() && !st.ok() && st.code() != StatusCode::kFailedPrecondition) first = st;
  };
  // What ended before the stop is settled as usual; a cluster's attempt goes on without this
  // service (still RUNNING: the next one re-attaches); the rest is asked to stop.
  for (auto it = attempts_.begin(); it != attempts_.end();) {
    if (auto e = it->second.process->poll()) {
      keep(settle(it->first, it->second, *e));
      it = attempts_.erase(it);
    } else if (it->second.process->outlives_service()) {
      it = attempts_.erase(it);
    } else {
      it->second.process->signal(SIGTERM);
      ++it;
    }
  }
  const auto deadline = Clock::now() + grace;
  for (auto& [id, a] : attempts_) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    std::optional<ExitStatus> e = a.process->wait_for(std::max(left, std::chrono::milliseconds(0)));
    if (!e) e = a.process->stop(std::chrono::milliseconds(0));  // SIGKILL and reap
    // Being ended anyway (cancel, time-out, hang), or it finished well within the grace:
    // settled so. Otherwise this stop interrupted it: queued again, the attempt not counted.
    if (a.ending != Ending::kNone || e->ok()) {
      keep(settle(id, a, *e));
    } else {
      auto j = store_.jobs().get(id);
      auto r = j.ok() ? requeue(*j, "the service stopped while it ran", a.guard) : j;
      keep(r.status());
      if (r.ok()) record_attempt(*r, a, *e);
    }
  }
  attempts_.clear();
  return first;
}

}  // namespace dlsys::jobs
