// What a job's attempt runs, for every executor: the program and arguments (`job_argv`) and the
// environment (`job_env`) of a train or command job. The local executor (job_service.h) runs them
// as a child process; the Kubernetes executor (k8s_job.h) renders them into a Job manifest.
//
// A train job runs `dlsys train SPEC --out DIR/run --auto-resume --extend` with the job's dataset
// and hyperparameters as --set overrides (after the service's checkpoint interval), so that a
// retry, wherever it runs, continues from the run directory's checkpoint. A command job runs its
// command; with a dataset, a shell first exports the version with `dlsys data pull` to
// DIR/data/data.csv, then execs the command. A predict job runs `dlsys predict MODEL DATASET
// --output NAME --work DIR/predict` (batch prediction, resumable by shard from its work folder).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "jobs/job_spec.h"
#include "meta/job_queue.h"

namespace dlsys::jobs {

struct JobProcessContext {
  std::string dlsys_exe = "dlsys";  // the dlsys executable the attempt runs
  std::string server_url;           // where runs are recorded and datasets read (--server) ...
  std::string data_dir;             // ... or this data directory (--data-dir), without a server
  int64_t checkpoint_every = 100;   // a train job's checkpoint interval (its hyperparameters win)
  std::string dir;                  // the job's directory: log, output/, run/, data/
  int64_t run_id = 0;               // the job's tracked run (0: none)
};

// The argv of an attempt of `job` (whose parsed spec is `spec`). InvalidArgument for a train job
// of a registered model without a training spec.
Result<std::vector<std::string>> job_argv(const meta::Job& job, const JobSpec& spec,
                                          const JobProcessContext& c);

// The environment the attempt gets (docs/jobs.md): DLSYS_JOB_ID, DLSYS_ATTEMPT, DLSYS_OUTPUT_DIR,
// DLSYS_HEARTBEAT_FILE, DLSYS_RUN_ID, DLSYS_SERVER, and for a command job DLSYS_HYPERPARAMETERS
// and, with a dataset, DLSYS_DATA_DIR. (OMP_NUM_THREADS and a token are the executor's.)
std::map<std::string, std::string> job_env(const meta::Job& job, const JobSpec& spec,
                                           const JobProcessContext& c);

// The overrides a train job applies to its training spec, as `dlsys train --set` takes them, in
// order (later ones win): train.checkpoint_every (when `checkpoint_every` > 0), data.dataset
// (the job's dataset and split), model.onnx (models:/NAME@REF, the job's registered `model` to
// fine-tune), then the job's hyperparameters. The service runs them and a
// submission is checked with them.
std::vector<std::string> train_overrides(const JobSpec& spec, int64_t checkpoint_every);

// A hyperparameter's value as `dlsys train --set` reads it (YAML): text as it is, numbers and
// true/false as JSON writes them.
std::string set_value(const nlohmann::json& v);

}  // namespace dlsys::jobs
