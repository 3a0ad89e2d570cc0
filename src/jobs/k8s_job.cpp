#include "jobs/k8s_job.h"

#include <yaml-cpp/yaml.h>

#include <cctype>

#include "jobs/job_process.h"

namespace dlsys::jobs {
namespace {

// A label value: at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric ("" allowed).
std::string label_value(const std::string& s) {
  std::string out;
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    out += std::isalnum(c) || c == '-' || c == '_' || c == '.' ? ch : '_';
    if (out.size() == 63) break;
  }
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.back()))) out.pop_back();
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.front()))) out.erase(0, 1);
  return out;
}

// A memory quantity: bytes as Kubernetes writes them ("512Mi" when whole MiB, else bytes).
std::string quantity(int64_t bytes) {
  if (bytes % (1 << 20) == 0) return std::to_string(bytes >> 20) + "Mi";
  return std::to_string(bytes);
}

// The labels of every object of job `job`.
void emit_labels(YAML::Emitter& y, const meta::Job& job, const K8sJobOptions& o) {
  y << YAML::Key << "labels" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "app.kubernetes.io/name" << YAML::Value << "dlsys-job";
  y << YAML::Key << "app.kubernetes.io/managed-by" << YAML::Value << "dlsys";
  y << YAML::Key << "dlsys.io/job-id" << YAML::Value << YAML::DoubleQuoted
    << std::to_string(job.id);
  if (o.per_attempt)
    y << YAML::Key << "dlsys.io/attempt" << YAML::Value << YAML::DoubleQuoted
      << std::to_string(job.attempts);
  y << YAML::Key << "dlsys.io/owner" << YAML::Value << YAML::DoubleQuoted << label_value(job.owner);
  y << YAML::EndMap;
}

}  // namespace

std::string k8s_job_name(const meta::Job& job, bool per_attempt) {
  // The start time too: an attempt that was requeued without counting (a takeover) starts again
  // with the same number, and must not meet its predecessor's Job, still being deleted.
  return per_attempt ? fmt::format("dlsys-job-{}-{}-{}", job.id, job.attempts, job.started_at)
                     : fmt::format("dlsys-job-{}", job.id);
}

std::string render_k8s_token_secret(const meta::Job& job, const std::string& name,
                                    const std::string& token, const K8sJobOptions& o) {
  YAML::Emitter y;
  y << YAML::BeginMap;
  y << YAML::Key << "apiVersion" << YAML::Value << "v1";
  y << YAML::Key << "kind" << YAML::Value << "Secret";
  y << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "name" << YAML::Value << name;
  y << YAML::Key << "namespace" << YAML::Value << o.namespace_;
  emit_labels(y, job, o);
  y << YAML::EndMap;
  y << YAML::Key << "type" << YAML::Value << "Opaque";
  y << YAML::Key << "stringData" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "token" << YAML::Value << YAML::DoubleQuoted << token;
  y << YAML::EndMap;
  y << YAML::EndMap;
  return "---\n" + std::string(y.c_str()) + "\n";
}

Result<std::string> render_k8s_job(const meta::Job& job, const JobSpec& spec,
                                   const K8sJobOptions& o) {
  JobProcessContext c;
  c.dlsys_exe = "dlsys";
  c.server_url = o.server_url;
  c.checkpoint_every = o.checkpoint_every;
  c.dir = o.mount + "/jobs/" + std::to_string(job.id);
  c.run_id = job.run_id;
  DLSYS_ASSIGN_OR_RETURN(std::vector<std::string> argv, job_argv(job, spec, c));
  // The pod writes the job's log where `dlsys jobs logs` reads it (the shared volume), after
  // making its directories; the attempt's exit code is the pod's.
  std::vector<std::string> command = {
      "/bin/sh", "-c",
      "mkdir -p \"$DLSYS_OUTPUT_DIR\" \"${DLSYS_DATA_DIR:-$DLSYS_OUTPUT_DIR}\" && exec \"$0\" "
      "\"$@\" >> \"$DLSYS_JOB_LOG\" 2>&1"};
  command.insert(command.end(), argv.begin(), argv.end());
  auto env = job_env(job, spec, c);
  env["DLSYS_JOB_LOG"] = c.dir + "/log";
  env["OMP_NUM_THREADS"] = std::to_string(job.threads);
  const std::string name = k8s_job_name(job, o.per_attempt);

  YAML::Emitter y;
  auto labels = [&] { emit_labels(y, job, o); };
  y << YAML::BeginMap;
  y << YAML::Key << "apiVersion" << YAML::Value << "batch/v1";
  y << YAML::Key << "kind" << YAML::Value << "Job";
  y << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "name" << YAML::Value << name;
  y << YAML::Key << "namespace" << YAML::Value << o.namespace_;
  labels();
  y << YAML::EndMap;
  y << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "backoffLimit" << YAML::Value << (o.per_attempt ? 0 : job.max_retries);
  // The service's own Jobs: it stops them at max_run_time itself (SIGTERM, then its grace); the
  // cluster's deadline is a backstop a minute past that, for a service that is gone.
  if (spec.max_run_seconds > 0)
    y << YAML::Key << "activeDeadlineSeconds" << YAML::Value
      << spec.max_run_seconds + (o.per_attempt ? o.stop_grace_seconds + 60 : 0);
  y << YAML::Key << "ttlSecondsAfterFinished" << YAML::Value << o.ttl_seconds;
  y << YAML::Key << "template" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  labels();
  y << YAML::EndMap;
  y << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "restartPolicy" << YAML::Value << "Never";
  if (o.stop_grace_seconds > 0)
    y << YAML::Key << "terminationGracePeriodSeconds" << YAML::Value << o.stop_grace_seconds;
  y << YAML::Key << "containers" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  y << YAML::Key << "name" << YAML::Value << "job";
  y << YAML::Key << "image" << YAML::Value << o.image;
  y << YAML::Key << "command" << YAML::Value << YAML::BeginSeq;
  for (const std::string& a : command) y << YAML::DoubleQuoted << a;
  y << YAML::EndSeq;
  y << YAML::Key << "workingDir" << YAML::Value << c.dir;
  y << YAML::Key << "env" << YAML::Value << YAML::BeginSeq;
  for (const auto& [k, v] : env)
    y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << k << YAML::Key << "value"
      << YAML::Value << YAML::DoubleQuoted << v << YAML::EndMap;
  if (!o.token_secret.empty()) {
    y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << "DLSYS_TOKEN";
    y << YAML::Key << "valueFrom" << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "secretKeyRef" << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "name" << YAML::Value << o.token_secret;
    y << YAML::Key << "key" << YAML::Value << "token";
    y << YAML::EndMap << YAML::EndMap << YAML::EndMap;
  }
  y << YAML::EndSeq;
  // Requests equal limits: the scheduler packs by what the job declared, as the local one does.
  y << YAML::Key << "resources" << YAML::Value << YAML::BeginMap;
  for (const char* kind : {"requests", "limits"}) {
    y << YAML::Key << kind << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "cpu" << YAML::Value << YAML::DoubleQuoted << std::to_string(job.threads);
    if (job.memory_bytes > 0)
      y << YAML::Key << "memory" << YAML::Value << YAML::DoubleQuoted << quantity(job.memory_bytes);
    y << YAML::EndMap;
  }
  y << YAML::EndMap;
  y << YAML::Key << "volumeMounts" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  y << YAML::Key << "name" << YAML::Value << "data";
  y << YAML::Key << "mountPath" << YAML::Value << o.mount;
  y << YAML::EndMap << YAML::EndSeq;
  y << YAML::EndMap << YAML::EndSeq;  // the container, containers
  y << YAML::Key << "volumes" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  y << YAML::Key << "name" << YAML::Value << "data";
  y << YAML::Key << "persistentVolumeClaim" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "claimName" << YAML::Value << o.claim;
  y << YAML::EndMap << YAML::EndMap << YAML::EndSeq;
  y << YAML::EndMap;  // pod spec
  y << YAML::EndMap;  // template
  y << YAML::EndMap;  // job spec
  y << YAML::EndMap;
  if (!y.good()) return Status::Internal("rendering the Job manifest: {}", y.GetLastError());
  // A document start, so that manifests printed one after another form one stream.
  return "---\n" + std::string(y.c_str()) + "\n";
}

}  // namespace dlsys::jobs
