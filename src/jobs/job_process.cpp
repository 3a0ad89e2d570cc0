#include "jobs/job_process.h"

#include <algorithm>

namespace dlsys::jobs {

std::string set_value(const nlohmann::json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

namespace {

std::string dataset_ref(const JobSpec& spec) {
  return spec.dataset.str() + (spec.split.empty() ? "" : ":" + spec.split);
}

}  // namespace

std::vector<std::string> train_overrides(const JobSpec& spec, int64_t checkpoint_every) {
  std::vector<std::string> out;
  if (checkpoint_every > 0)
    out.push_back("train.checkpoint_every=" + std::to_string(checkpoint_every));
  if (spec.has_dataset) out.push_back("data.dataset=" + dataset_ref(spec));
  // Fine-tuning a registered version: dlsys train fetches it (models:/NAME@REF).
  if (spec.has_model && spec.kind == JobKind::kTrain)
    out.push_back("model.onnx=models:/" + spec.model.str());
  for (const auto& [k, v] : spec.hyperparameters.items()) out.push_back(k + "=" + set_value(v));
  return out;
}

Result<std::vector<std::string>> job_argv(const meta::Job& job, const JobSpec& spec,
                                          const JobProcessContext& c) {
  switch (spec.kind) {
    case JobKind::kPredict: {
      // Its work folder keeps the finished shards: a retry goes on from them.
      std::vector<std::string> argv = {c.dlsys_exe,      "predict",
                                       spec.model.str(), dataset_ref(spec),
                                       "--output",       spec.output_dataset,
                                       "--work",         c.dir + "/predict",
                                       "--threads",      std::to_string(job.threads),
                                       "--json"};
      if (!c.server_url.empty()) {
        argv.insert(argv.end(), {"--server", c.server_url});
      } else if (!c.data_dir.empty()) {
        argv.insert(argv.end(), {"--data-dir", c.data_dir});
      }
      if (c.run_id > 0) argv.insert(argv.end(), {"--run-id", std::to_string(c.run_id)});
      return argv;
    }
    case JobKind::kCommand: {
      if (!spec.has_dataset) return spec.command;
      const std::string where = c.server_url.empty() ? "--data-dir" : "--server";
      const std::string from = c.server_url.empty() ? c.data_dir : c.server_url;
      std::vector<std::string> argv = {
          "/bin/sh",
          "-c",
          "\"$0\" data pull \"$1\" --format csv -o \"$2\" \"$3\" \"$4\" --quiet || exit $?; "
          "shift 4; exec \"$@\"",
          c.dlsys_exe,
          dataset_ref(spec),
          c.dir + "/data/data.csv",
          where,
          from};
      argv.insert(argv.end(), spec.command.begin(), spec.command.end());
      return argv;
    }
    case JobKind::kTrain:
      break;
  }
  if (spec.spec.empty())
    return Status::Invalid(
        "a train job of a registered model ({}) needs a training spec (spec: FILE.yaml, e.g. "
        "examples/digits/finetune.yaml): its data, what to freeze and how to train; the job "
        "sets its model.onnx to the model",
        spec.model.str());
  // Data-parallel: the job's cores shared by its ranks.
  const int64_t threads =
      spec.workers > 1 ? std::max<int64_t>(1, job.threads / spec.workers) : job.threads;
  std::vector<std::string> argv = {
      c.dlsys_exe,    "train",
      spec.spec,      "--json",
      "--log-every",  "10",
      "--threads",    std::to_string(threads),
      "--experiment", spec.experiment.empty() ? job.name : spec.experiment};
  if (spec.workers > 0) argv.insert(argv.end(), {"--nproc", std::to_string(spec.workers)});
  if (spec.zero > 0) argv.insert(argv.end(), {"--zero", std::to_string(spec.zero)});
  if (spec.min_workers > 0)
    argv.insert(argv.end(), {"--min-workers", std::to_string(spec.min_workers)});
  for (const std::string& o : train_overrides(spec, c.checkpoint_every))
    argv.insert(argv.end(), {"--set", o});
  // A retry goes on from the run directory's checkpoint (the same overrides: the same spec); a
  // job given more epochs after it succeeded (a promoted search trial) trains further from its
  // final checkpoint (--extend).
  argv.insert(argv.end(), {"--out", c.dir + "/run", "--auto-resume", "--extend"});
  if (!c.server_url.empty()) {
    argv.insert(argv.end(), {"--server", c.server_url});
  } else if (!c.data_dir.empty()) {
    argv.insert(argv.end(), {"--data-dir", c.data_dir});
  }
  if (c.run_id > 0 && (!c.server_url.empty() || !c.data_dir.empty()))
    argv.insert(argv.end(), {"--run-id", std::to_string(c.run_id)});
  return argv;
}

std::map<std::string, std::string> job_env(const meta::Job& job, const JobSpec& spec,
                                           const JobProcessContext& c) {
  std::map<std::string, std::string> env = {{"DLSYS_JOB_ID", std::to_string(job.id)},
                                            {"DLSYS_OUTPUT_DIR", c.dir + "/output"},
                                            {"DLSYS_ATTEMPT", std::to_string(job.attempts)},
                                            {"DLSYS_HEARTBEAT_FILE", c.dir + "/heartbeat"}};
  if (c.run_id > 0) env["DLSYS_RUN_ID"] = std::to_string(c.run_id);
  if (!c.server_url.empty()) env["DLSYS_SERVER"] = c.server_url;
  if (spec.kind == JobKind::kCommand) {
    env["DLSYS_HYPERPARAMETERS"] = spec.hyperparameters.dump();
    if (spec.has_dataset) env["DLSYS_DATA_DIR"] = c.dir + "/data";
  }
  return env;
}

}  // namespace dlsys::jobs
