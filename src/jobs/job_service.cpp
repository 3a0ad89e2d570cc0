#include "jobs/job_service.h"

#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

#include "core/file_util.h"
#include "jobs/job_spec.h"

namespace dlsys::jobs {

namespace fs = std::filesystem;

JobService::JobService(meta::MetaStore& store, JobServiceOptions options)
    : store_(store), options_(std::move(options)) {}

JobService::~JobService() = default;  // each ChildProcess kills and reaps its process

Status JobService::recover() {
  DLSYS_ASSIGN_OR_RETURN(auto running, store_.jobs().running());
  std::set<int64_t> stopped;
  for (const meta::Job& j : running) {
    if (children_.count(j.id)) continue;
    // Its process belonged to a service that is gone: stop whatever is left of it so that it
    // never runs twice, then queue it again (or fail it when its attempts are spent).
    if (j.pid > 0) kill(-static_cast<pid_t>(j.pid), SIGKILL);
    auto r = store_.jobs().requeue_interrupted(j.id, "the service restarted while it ran");
    if (!r.ok() && r.status().code() != StatusCode::kFailedPrecondition) return r.status();
  }
  return Status::OK();
}

Status JobService::settle(int64_t id, const ExitStatus& e) {
  DLSYS_ASSIGN_OR_RETURN(meta::Job j, store_.jobs().get(id));
  Result<meta::Job> r = Status::OK();
  if (j.cancel_requested) {
    r = store_.jobs().mark_cancelled(id, now_ms());
  } else if (e.ok()) {
    r = store_.jobs().finish(id, true, "", now_ms());
  } else {
    int64_t backoff = options_.retry_backoff_ms << std::min<int64_t>(20, j.attempts - 1);
    r = store_.jobs().retry_or_fail(id, e.describe(), now_ms(), backoff);
  }
  return r.status();
}

Status JobService::start_job(const meta::Job& job) {
  DLSYS_ASSIGN_OR_RETURN(meta::Job j, store_.jobs().start(job.id, 0, now_ms()));
  auto spec = job_spec_from_json(j.spec, fmt::format("job {}", j.id));
  if (!spec.ok())
    return store_.jobs().finish(j.id, false, spec.status().message(), now_ms()).status();
  if (spec->kind != JobKind::kCommand)
    return store_.jobs()
        .finish(j.id, false,
                fmt::format("{} jobs do not run yet: this service runs command jobs (issue 22)",
                            job_kind_name(spec->kind)),
                now_ms())
        .status();
  fs::path dir = fs::path(options_.work_dir) / std::to_string(j.id);
  std::error_code ec;
  fs::create_directories(dir / "output", ec);
  ProcessSpec p;
  p.argv = spec->command;
  p.log_path = (dir / "log").string();
  p.workdir = dir.string();
  p.threads = j.threads;
  p.memory_bytes = j.memory_bytes;
  p.env = {{"DLSYS_JOB_ID", std::to_string(j.id)},
           {"DLSYS_OUTPUT_DIR", (dir / "output").string()},
           {"DLSYS_ATTEMPT", std::to_string(j.attempts)}};
  auto child = ec ? Result<std::unique_ptr<ChildProcess>>(
                        Status::IOError("cannot create {}: {}", dir.string(), ec.message()))
                  : ChildProcess::start(p);
  if (!child.ok())
    return store_.jobs()
        .retry_or_fail(j.id, child.status().message(), now_ms(), options_.retry_backoff_ms)
        .status();
  DLSYS_RETURN_IF_ERROR(store_.jobs().set_pid(j.id, (*child)->pid()));
  children_[j.id] = std::move(child).value();
  return Status::OK();
}

Result<int> JobService::tick() {
  // Attempts that ended.
  for (auto it = children_.begin(); it != children_.end();) {
    if (auto e = it->second->poll()) {
      DLSYS_RETURN_IF_ERROR(settle(it->first, *e));
      it = children_.erase(it);
    } else {
      ++it;
    }
  }
  // Cancels asked for, and heartbeats for the rest: one read of the running jobs.
  DLSYS_ASSIGN_OR_RETURN(auto running, store_.jobs().running());
  std::set<int64_t> stopped;
  for (const meta::Job& j : running) {
    auto child = children_.find(j.id);
    if (child == children_.end()) continue;  // another service's
    if (j.cancel_requested) {
      DLSYS_RETURN_IF_ERROR(settle(j.id, child->second->stop(options_.stop_grace)));
      children_.erase(child);
      stopped.insert(j.id);
      continue;
    }
    DLSYS_RETURN_IF_ERROR(store_.jobs().heartbeat(j.id, now_ms()));
  }
  DLSYS_ASSIGN_OR_RETURN(auto queued, store_.jobs().runnable(now_ms()));
  if (queued.empty()) return 0;
  // What was just stopped is no longer running; the scheduler counts the rest.
  running.erase(std::remove_if(running.begin(), running.end(),
                               [&](const meta::Job& j) { return stopped.count(j.id) > 0; }),
                running.end());
  int64_t now = now_ms();
  DLSYS_ASSIGN_OR_RETURN(auto usage,
                         store_.jobs().usage_by_owner(now - options_.usage_window_ms, now));
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
  for (const auto& [id, c] : children_) {
    if (c->wait_fd() < 0) {  // no pidfd: a short sleep instead
      std::this_thread::sleep_for(std::min(timeout, std::chrono::milliseconds(5)));
      return;
    }
    fds.push_back({c->wait_fd(), POLLIN, 0});
  }
  if (fds.empty()) {
    std::this_thread::sleep_for(timeout);
    return;
  }
  ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
}

}  // namespace dlsys::jobs
