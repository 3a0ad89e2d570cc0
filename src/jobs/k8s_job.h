// The Kubernetes form of a job (issue 22, "Scale beyond one machine"): a `batch/v1` Job manifest
// that runs the same attempt the local executor runs (jobs/job_process.h) in a pod of the dlsys
// image, with the job's threads and memory as the container's requests and limits, its
// directory on the shared data volume (the PersistentVolumeClaim of deploy/k8s/server.yaml), the
// job's environment, max_retries as backoffLimit (a retried pod resumes from the checkpoint in
// the shared run directory) and max_run_time as activeDeadlineSeconds. The manifest is checked
// offline against the API's fields by scripts/check_k8s.py --job; `dlsys jobs render` prints it.
#pragma once

#include <string>

#include "core/status.h"
#include "jobs/job_spec.h"
#include "meta/job_queue.h"

namespace dlsys::jobs {

struct K8sJobOptions {
  std::string image = "dlsys:latest";  // holds the dlsys binary (and a job's own tools)
  std::string namespace_ = "default";
  std::string claim = "dlsys-data";         // the shared data directory's volume claim
  std::string mount = "/data";              // where the pod mounts it (the server's data dir)
  std::string server_url = "http://dlsys";  // the dlsys Service inside the cluster
  int64_t checkpoint_every = 100;
  int64_t ttl_seconds = 86400;  // a finished Job is deleted after a day
  // The service's own Jobs (KubernetesExecutor): one Job per start of an attempt, named
  // dlsys-job-<id>-<attempt>-<started_at> and labelled dlsys.io/attempt, with backoffLimit 0 (the
  // service retries, from the checkpoint, with its backoff and its count of attempts).
  bool per_attempt = false;
  // The Secret (render_k8s_token_secret) whose key `token` the pod gets as DLSYS_TOKEN; "": none.
  std::string token_secret;
  // How long the pod has between SIGTERM and SIGKILL when it is stopped (a trainer
  // checkpoints); 0: the cluster's default (30 s).
  int64_t stop_grace_seconds = 0;
};

// The Job's name: dlsys-job-<id>, or with per_attempt dlsys-job-<id>-<attempt>-<started_at>
// (unique per start: an uncounted restart of an attempt has another start time).
std::string k8s_job_name(const meta::Job& job, bool per_attempt);

// The manifest (YAML) of `job` (its parsed spec `spec`), named k8s_job_name. The errors of
// job_argv.
Result<std::string> render_k8s_job(const meta::Job& job, const JobSpec& spec,
                                   const K8sJobOptions& options);

}  // namespace dlsys::jobs

namespace dlsys::jobs {

// A `v1` Secret manifest named `name` holding `token` under the key `token` (an attempt's API
// token: kept out of the Job's manifest, which anyone who may read Jobs sees), labelled as the
// job's.
std::string render_k8s_token_secret(const meta::Job& job, const std::string& name,
                                    const std::string& token, const K8sJobOptions& options);

}  // namespace dlsys::jobs
