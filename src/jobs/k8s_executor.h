// The Kubernetes executor (issue 22, "Scale beyond one machine"): each attempt of a job is a
// `batch/v1` Job (k8s_job.h, per start: dlsys-job-<id>-<attempt>-<started_at>, backoffLimit 0)
// that `kubectl apply` submits, with the attempt's API token in a Secret beside it. The pod writes
// the job's log and heartbeat to the job's directory on the shared volume, which the server
// mounts at the same path (deploy/k8s/server.yaml), so the service reads them as it does a local
// attempt's.
//
// Watching: one `kubectl get jobs -l app.kubernetes.io/managed-by=dlsys -o json` per
// poll_interval answers for every running attempt (never one call per job per tick). A Job whose
// condition Complete is True succeeded; Failed is True: it failed, with the exit code and reason
// of its pod's container (`kubectl get pods -l job-name=NAME`: 137 OOMKilled reads as killed by
// SIGKILL, "OOMKilled"); deadline exceeded reads as SIGKILL, "DeadlineExceeded". Stopping: SIGTERM
// deletes the Job in the foreground (its pod gets SIGTERM and the Job's
// terminationGracePeriodSeconds, the service's stop grace); SIGKILL force-deletes its pods at
// once. A Job that is gone ended as the signal asked, or as killed when nobody here asked.
// Attempts outlive the service: a server that stops leaves them running, and the next one
// re-attaches by name, or another server adopts them (adopts_across_runners). Every kubectl call
// has a deadline (kubectl_timeout).
//
// No cluster runs in this project's tests: tests/jobs/kubectl_standin.py stands in for kubectl
// (docs/deploy.md says what that leaves unchecked).
//
// Threading: used by the job service's one thread (executor.h).
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobs/executor.h"
#include "jobs/k8s_job.h"

namespace dlsys::jobs {

struct KubernetesExecutorOptions {
  K8sJobOptions job;  // image, namespace, claim, mount (the server's data directory), server URL
  std::string kubectl = "kubectl";
  std::vector<std::string> kubectl_args;  // before every verb, e.g. --context NAME
  // kubectl's files (answers; a manifest holding a token, until applied): a folder of this
  // server's own, not the shared volume. "": the system's temp folder.
  std::string scratch_dir;
  std::chrono::milliseconds poll_interval{2000};
  std::chrono::milliseconds kubectl_timeout{30000};
};

// What the service needs of one Job's status (the API's JobStatus).
struct K8sJobState {
  bool complete = false;  // condition Complete is True
  bool failed = false;    // condition Failed is True
  bool deleting = false;  // metadata.deletionTimestamp is set
  std::string reason;     // the Failed condition's reason (DeadlineExceeded, ...)
};

// The Jobs of a `kubectl get jobs -o json` answer (a v1 List of batch/v1 Job), by name.
// InvalidArgument naming the place when it is not one.
Result<std::map<std::string, K8sJobState>> parse_k8s_jobs(const nlohmann::json& list);
// How the (last) container of the pods in a `kubectl get pods -o json` answer ended: its
// terminated state's exit code (128 + N read as killed by signal N) and reason; nullopt when
// no container has terminated.
std::optional<ExitStatus> parse_k8s_pod_end(const nlohmann::json& list);

class KubernetesExecutor : public Executor {
 public:
  explicit KubernetesExecutor(KubernetesExecutorOptions options);

  std::string name() const override { return "kubernetes"; }
  // A cluster's Job goes on without the service that started it: another service adopts it.
  bool adopts_across_runners() const override { return true; }
  // Writes the Job's manifest to <dir>/k8s-<attempt>.yaml and applies it with the token's Secret
  // (from scratch_dir: the token never lands on the shared volume); an error carries kubectl's
  // message and leaves nothing behind (the Job and Secret are deleted again).
  Result<std::unique_ptr<Execution>> start(const meta::Job& job, const JobSpec& spec,
                                           const AttemptSpec& attempt) override;
  // The Job of the job's current attempt, while the cluster still has it (finished or not: its
  // end is read as usual), or when the cluster does not answer now (a later list settles it).
  std::unique_ptr<Execution> reattach(const meta::Job& job) override;
  // Deletes the Job and Secret of the job's current attempt (whichever host started it).
  void end_leftover(const meta::Job& job, bool same_host) override;

  // Sets the server's URL as pods reach it when none was given (a server that chose its port);
  // before the first start().
  void set_default_server_url(const std::string& url) {
    if (options_.job.server_url.empty()) options_.job.server_url = url;
  }

  // For the executions (k8s_executor.cpp). The state of Job `name`, refreshing the list when it is
  // older than poll_interval (not with `any_newer`: then any list read after `newer_than` will
  // do) or than `newer_than`; a read that failed counts as read (it is tried again a
  // poll_interval later, not at every call). nullopt: not in the list. `known`: false when the
  // list could not be read (then nothing is concluded).
  std::optional<K8sJobState> job_state(const std::string& name,
                                       std::chrono::steady_clock::time_point newer_than,
                                       bool* known, bool any_newer = false);
  // How Job `name`'s pod ended (parse_k8s_pod_end), or killed by SIGKILL when that is unknown.
  ExitStatus pod_end(const std::string& name);
  // Deletes Job `name` in the foreground (its pods get SIGTERM and their grace), then for SIGKILL
  // force-deletes its pods, then its Secret; each is tried whatever the one before did.
  void delete_job(const std::string& name, int sig);
  // Deletes the Secret of Job `name`'s token (an attempt that ended).
  void delete_secret(const std::string& name);
  // When the list is next read.
  std::chrono::steady_clock::time_point next_refresh() const {
    return listed_at_ + options_.poll_interval;
  }

 private:
  // Runs kubectl with `args` (after options.kubectl_args) within kubectl_timeout: its stdout,
  // or an error with its stderr.
  Result<std::string> kubectl(const std::vector<std::string>& args);
  Status refresh();

  KubernetesExecutorOptions options_;
  std::map<std::string, K8sJobState> jobs_;  // the last list read
  std::chrono::steady_clock::time_point listed_at_{};
  const std::chrono::steady_clock::time_point created_at_ = std::chrono::steady_clock::now();
  bool listed_ok_ = false;
};

}  // namespace dlsys::jobs
