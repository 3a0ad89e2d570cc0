#include "jobs/k8s_executor.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "core/file_util.h"

namespace dlsys::jobs {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

// The text at `key` of object `o` ("" when absent or not text: kubectl's JSON is not trusted).
std::string text_at(const json& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The token's Secret of Job `name`.
std::string secret_name(const std::string& name) {
  return name + "-token";
}

// The last lines of kubectl's stderr, for an error message.
std::string tail_of(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.size() > 600) text = "..." + text.substr(text.size() - 600);
  return text.empty() ? "(no message)" : text;
}

// One attempt as a Job in the cluster.
class K8sExecution : public Execution {
 public:
  K8sExecution(KubernetesExecutor* executor, std::string name, Clock::time_point applied_at)
      : executor_(executor), name_(std::move(name)), applied_at_(applied_at) {}

  int64_t pid() const override { return 0; }
  int wait_fd() const override { return -1; }
  std::chrono::milliseconds recheck_after() const override {
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(executor_->next_refresh() - Clock::now());
    return std::max(left, std::chrono::milliseconds(20));
  }
  bool outlives_service() const override { return true; }

  std::optional<ExitStatus> poll() override {
    if (status_) return status_;
    bool known = false;
    std::optional<K8sJobState> s = executor_->job_state(name_, applied_at_, &known);
    if (!known) return std::nullopt;  // the cluster did not answer: nothing concluded
    if (!s) {
      // Gone: deleted as asked, or by someone else (then it counts as killed).
      ExitStatus e;
      e.signal = signal_sent_ ? signal_sent_ : SIGKILL;
      e.detail =
          signal_sent_ ? "its Job was deleted to stop it" : "its Job was deleted outside dlsys";
      status_ = e;
    } else if (s->complete) {
      ExitStatus e;
      e.exited = true;
      status_ = e;
    } else if (s->failed) {
      ExitStatus e = executor_->pod_end(name_);
      // The pod's own reason (OOMKilled) says most. The Job's says more only when the cluster
      // ended it (DeadlineExceeded), or when the pod's end is unknown; not the
      // BackoffLimitExceeded that every failed pod of ours brings (backoffLimit 0).
      if (s->reason == "DeadlineExceeded" ||
          (e.detail.empty() && !e.exited && s->reason != "BackoffLimitExceeded"))
        e.detail = s->reason;
      status_ = e;
    }
    // Its token's Secret goes with its end (the token is revoked by then); the Job itself stays
    // for ttlSecondsAfterFinished, for `kubectl describe`.
    if (status_) executor_->delete_secret(name_);
    return status_;
  }

  std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    while (!poll()) {
      const auto now = Clock::now();
      if (now >= deadline) return std::nullopt;
      std::this_thread::sleep_for(
          std::min(recheck_after(), std::chrono::ceil<std::chrono::milliseconds>(deadline - now)));
    }
    return status_;
  }

  ExitStatus stop(std::chrono::milliseconds grace) override {
    if (auto e = poll()) return *e;
    signal(SIGTERM);
    if (auto e = wait_for(grace)) return *e;
    signal(SIGKILL);
    if (auto e = wait_for(std::chrono::seconds(60))) return *e;
    ExitStatus unknown;
    unknown.signal = SIGKILL;
    unknown.detail = "its Job did not go away within 60 s of a forced delete";
    return unknown;
  }

  void signal(int sig) override {
    if (status_ || (sig != SIGTERM && sig != SIGKILL)) return;
    if (signal_sent_ == SIGKILL || (sig == SIGTERM && signal_sent_)) return;  // asked already
    executor_->delete_job(name_, sig);
    signal_sent_ = sig;
  }

 private:
  KubernetesExecutor* executor_;
  std::string name_;
  Clock::time_point applied_at_;  // only a list read after this may say it is gone
  int signal_sent_ = 0;
  std::optional<ExitStatus> status_;
};

}  // namespace

Result<std::map<std::string, K8sJobState>> parse_k8s_jobs(const json& list) {
  if (!list.is_object() || !list.contains("items") || !list["items"].is_array())
    return Status::Invalid("kubectl get jobs: the answer is not a List with items");
  std::map<std::string, K8sJobState> out;
  size_t i = 0;
  for (const json& item : list["items"]) {
    const std::string at = fmt::format("kubectl get jobs: items[{}]", i++);
    if (!item.is_object() || !item.contains("metadata") || !item["metadata"].is_object())
      return Status::Invalid("{}: no metadata", at);
    const json& meta = item["metadata"];
    if (!meta.contains("name") || !meta["name"].is_string())
      return Status::Invalid("{}: metadata.name is not a string", at);
    K8sJobState s;
    s.deleting = meta.contains("deletionTimestamp") && !meta["deletionTimestamp"].is_null();
    if (item.contains("status") && item["status"].is_object()) {
      const json& status = item["status"];
      if (status.contains("conditions") && status["conditions"].is_array()) {
        for (const json& c : status["conditions"]) {
          if (!c.is_object() || text_at(c, "status") != "True") continue;
          const std::string type = text_at(c, "type");
          if (type == "Complete") s.complete = true;
          if (type == "Failed") {
            s.failed = true;
            s.reason = text_at(c, "reason");
          }
        }
      }
    }
    out[meta["name"].get<std::string>()] = s;
  }
  return out;
}

std::optional<ExitStatus> parse_k8s_pod_end(const json& list) {
  if (!list.is_object() || !list.contains("items") || !list["items"].is_array())
    return std::nullopt;
  std::optional<ExitStatus> end;
  for (const json& pod : list["items"]) {
    if (!pod.is_object() || !pod.contains("status") || !pod["status"].is_object()) continue;
    const json& st = pod["status"];
    if (!st.contains("containerStatuses") || !st["containerStatuses"].is_array()) continue;
    for (const json& c : st["containerStatuses"]) {
      if (!c.is_object() || !c.contains("state") || !c["state"].is_object()) continue;
      const json& state = c["state"];
      if (!state.contains("terminated") || !state["terminated"].is_object()) continue;
      const json& t = state["terminated"];
      const int code = t.contains("exitCode") && t["exitCode"].is_number_integer()
                           ? t["exitCode"].get<int>()
                           : 0;
      ExitStatus e;
      if (code > 128 && code < 128 + 65) {
        e.signal = code - 128;  // a container runtime reports a signal as 128 + N
      } else {
        e.exited = true;
        e.code = code;
      }
      const std::string reason = text_at(t, "reason");
      if (reason != "Error" && reason != "Completed") e.detail = reason;
      end = e;
    }
  }
  return end;
}

KubernetesExecutor::KubernetesExecutor(KubernetesExecutorOptions options)
    : options_(std::move(options)) {
  options_.job.per_attempt = true;
  if (options_.scratch_dir.empty()) options_.scratch_dir = fs::temp_directory_path().string();
}

Result<std::string> KubernetesExecutor::kubectl(const std::vector<std::string>& args) {
  static std::atomic<int64_t> calls{0};
  const std::string base = (fs::path(options_.scratch_dir) /
                            fmt::format("kubectl-{}-{}", ::getpid(), calls.fetch_add(1)))
                               .string();
  ProcessSpec p;
  p.argv = {options_.kubectl};
  p.argv.insert(p.argv.end(), options_.kubectl_args.begin(), options_.kubectl_args.end());
  p.argv.insert(p.argv.end(), args.begin(), args.end());
  p.stdout_path = base + ".out";
  p.log_path = base + ".err";
  auto cleanup = [&] {
    std::error_code ec;
    fs::remove(p.stdout_path, ec);
    fs::remove(p.log_path, ec);
  };
  const std::string what = "kubectl " + (args.empty() ? std::string() : args[0]);
  auto child = ChildProcess::start(p);
  if (!child.ok()) {
    cleanup();
    return child.status().with_context(what);
  }
  std::optional<ExitStatus> e = (*child)->wait_for(options_.kubectl_timeout);
  if (!e) {
    (*child)->stop(std::chrono::milliseconds(0));
    cleanup();
    return Status::DeadlineExceeded(
        "{} did not answer within {} ms: is the cluster reachable (kubectl cluster-info)?", what,
        options_.kubectl_timeout.count());
  }
  auto out = read_file(p.stdout_path);
  auto err = read_file(p.log_path);
  cleanup();
  if (!e->ok())
    return Status::IOError("{} failed ({}): {}", what, e->describe(),
                           tail_of(err.ok() ? *err : std::string()));
  return out.ok() ? *out : std::string();
}

Status KubernetesExecutor::refresh() {
  listed_at_ = Clock::now();
  listed_ok_ = false;
  DLSYS_ASSIGN_OR_RETURN(
      std::string text,
      kubectl({"get", "jobs", "--namespace", options_.job.namespace_, "--selector",
               "app.kubernetes.io/managed-by=dlsys", "--output", "json"}));
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) return Status::Invalid("kubectl get jobs: the answer is not JSON");
  DLSYS_ASSIGN_OR_RETURN(jobs_, parse_k8s_jobs(doc));
  listed_ok_ = true;
  return Status::OK();
}

std::optional<K8sJobState> KubernetesExecutor::job_state(const std::string& name,
                                                         Clock::time_point newer_than, bool* known,
                                                         bool any_newer) {
  const bool too_old = listed_at_ <= newer_than;
  if (too_old || (!any_newer && Clock::now() >= next_refresh())) {
    if (Status st = refresh(); !st.ok())
      std::fprintf(stderr, "jobs: kubernetes: %s\n", st.message().c_str());
  }
  *known = listed_ok_ && listed_at_ > newer_than;
  if (!*known) return std::nullopt;
  auto it = jobs_.find(name);
  if (it == jobs_.end()) return std::nullopt;
  return it->second;
}

ExitStatus KubernetesExecutor::pod_end(const std::string& name) {
  auto text = kubectl({"get", "pods", "--namespace", options_.job.namespace_, "--selector",
                       "job-name=" + name, "--output", "json"});
  if (text.ok()) {
    json doc = json::parse(*text, nullptr, false);
    if (auto e = parse_k8s_pod_end(doc)) return *e;
  }
  ExitStatus e;
  e.signal = SIGKILL;  // no container ended on its own: the cluster ended it
  return e;
}

void KubernetesExecutor::delete_job(const std::string& name, int sig) {
  const std::string& ns = options_.job.namespace_;
  // The Job first (so that its controller makes no new pod), in the foreground: its pods get
  // SIGTERM and their grace. For SIGKILL its pods then go at once, without grace.
  Result<std::string> r = kubectl({"delete", "job", name, "--namespace", ns, "--cascade=foreground",
                                   "--ignore-not-found", "--wait=false"});
  if (!r.ok()) std::fprintf(stderr, "jobs: kubernetes: %s\n", r.status().message().c_str());
  if (sig == SIGKILL) {
    r = kubectl({"delete", "pods", "--namespace", ns, "--selector", "job-name=" + name,
                 "--grace-period=0", "--force", "--ignore-not-found", "--wait=false"});
    if (!r.ok()) std::fprintf(stderr, "jobs: kubernetes: %s\n", r.status().message().c_str());
  }
  delete_secret(name);
}

void KubernetesExecutor::delete_secret(const std::string& name) {
  (void)kubectl({"delete", "secret", secret_name(name), "--namespace", options_.job.namespace_,
                 "--ignore-not-found", "--wait=false"});
}

Result<std::unique_ptr<Execution>> KubernetesExecutor::start(const meta::Job& job,
                                                             const JobSpec& spec,
                                                             const AttemptSpec& attempt) {
  const std::string name = k8s_job_name(job, true);
  K8sJobOptions o = options_.job;
  std::string manifest;
  auto token = attempt.process.env.find("DLSYS_TOKEN");
  if (token != attempt.process.env.end()) {
    o.token_secret = secret_name(name);
    manifest += render_k8s_token_secret(job, o.token_secret, token->second, o);
  }
  DLSYS_ASSIGN_OR_RETURN(std::string job_yaml, render_k8s_job(job, spec, o));
  // The Job's manifest is kept beside the job's log, for whoever looks into a failure; what is
  // applied (with the token's Secret) is written to this server's own scratch folder, which job
  // pods do not mount, and removed once applied.
  DLSYS_RETURN_IF_ERROR(write_file_atomic(
      (fs::path(attempt.dir) / fmt::format("k8s-{}.yaml", job.attempts)).string(), job_yaml));
  manifest += job_yaml;
  const std::string path =
      (fs::path(options_.scratch_dir) / fmt::format("apply-{}-{}.yaml", ::getpid(), name)).string();
  DLSYS_RETURN_IF_ERROR(write_file_atomic(path, manifest));
  const Clock::time_point applied_at = Clock::now();
  auto applied = kubectl({"apply", "--namespace", o.namespace_, "--filename", path});
  std::error_code ec;
  fs::remove(path, ec);
  if (!applied.ok()) {
    delete_job(name, SIGKILL);  // whatever part of it was created
    return applied.status().with_context(fmt::format("submitting job {} to Kubernetes", job.id));
  }
  return std::unique_ptr<Execution>(new K8sExecution(this, name, applied_at));
}

std::unique_ptr<Execution> KubernetesExecutor::reattach(const meta::Job& job) {
  const std::string name = k8s_job_name(job, true);
  bool known = false;
  const Clock::time_point now = Clock::now();
  // A list read since this executor began will do (one for all the jobs a restarted service
  // re-attaches, not one each): the Job was made before that, by a service that is gone.
  std::optional<K8sJobState> s = job_state(name, created_at_, &known, /*any_newer=*/true);
  // Gone: it ends here. Unknown (the cluster did not answer): taken over all the same, so that it
  // never runs twice; the next list read settles it (ended, if it is not there).
  if (known && !s) return nullptr;
  return std::unique_ptr<Execution>(new K8sExecution(this, name, now));
}

void KubernetesExecutor::end_leftover(const meta::Job& job, bool) {
  delete_job(k8s_job_name(job, true), SIGKILL);
}

}  // namespace dlsys::jobs
