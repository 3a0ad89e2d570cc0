// A training-service job spec (YAML or JSON, docs/jobs.md): what to run (kind train, command or
// predict), on which dataset version, with which resources, priority, retries and run-time
// limit, and what to do when it succeeds. Parsed with yaml-cpp (JSON is read as YAML): every
// error names the file, the line and the field, and says what would be accepted; unknown fields
// are errors (a typo never falls back to a default silently). The spec is stored and served as
// JSON (to_json / job_spec_from_json), which the same checks read back.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace dlsys::jobs {

// `name@version` (version a positive number), `name@alias` or `name` alone (the newest version):
// a dataset or model version as a job names it.
struct VersionRef {
  std::string name;
  int64_t version = 0;  // 0: not a number (alias, or the newest when alias is empty too)
  std::string alias;
  std::string str() const;
};
// Parses `text`; errors say what the reference looks like. `what` names the field.
Result<VersionRef> parse_version_ref(const std::string& text, const std::string& what);

enum class JobKind { kTrain, kCommand, kPredict };
const char* job_kind_name(JobKind k);

struct JobResources {
  int64_t threads = 1;       // cores the job may use (its OMP_NUM_THREADS; the scheduler's unit)
  int64_t memory_bytes = 0;  // 0: no limit
};

struct JobSpec {
  JobKind kind = JobKind::kTrain;
  std::string name;  // shown in lists; defaults to the kind
  // The experiment its run is recorded in (empty: one named after the job): a search puts all
  // its trials in one.
  std::string experiment;
  // train: the model spec (a YAML path, train/spec.h), or `model` to fine-tune a registered
  // ONNX model version. predict: `model` is the version that predicts.
  std::string spec;
  VersionRef model;
  bool has_model = false;
  // train, predict: the dataset version read, and its split (empty: the spec's or all rows).
  VersionRef dataset;
  bool has_dataset = false;
  std::string split;
  // train: values that override the spec's (e.g. lr, epochs, batch_size); scalars only.
  nlohmann::json hyperparameters = nlohmann::json::object();
  // command: the program and its arguments (argv[0] looked up on PATH).
  std::vector<std::string> command;
  // command: the folder it runs in (load_job_spec: the job file's folder unless given; empty:
  // the job's own directory on the server).
  std::string working_dir;
  // predict: the dataset the predictions are written to as a new version.
  std::string output_dataset;
  // train: data-parallel on this many rank processes of one machine (dlsys train --nproc; 0:
  // one process), with the optimizer's state sharded when zero is 1 (--zero 1). A rank that
  // fails fails the attempt; a retry starts every rank again from the last checkpoint.
  int64_t workers = 0;
  int64_t zero = 0;
  // train, distributed: when a rank fails, the others go on as the largest power of two of
  // workers that remains, at least this many, from the newest checkpoint (--min-workers); 0:
  // the attempt fails.
  int64_t min_workers = 0;
  JobResources resources;
  int64_t priority = 0;         // higher first
  int64_t max_retries = 0;      // restarts after a failure of the process
  int64_t max_run_seconds = 0;  // 0: no limit
  std::string owner;            // the server sets it from the principal that submits
  std::string register_model;   // on success: register the job's ONNX output as this model
  std::string move_alias;       // ... and move this alias to the new version
};

// Parses a spec from `text` (YAML or JSON); `path` names it in errors ("job.yaml").
Result<JobSpec> parse_job_spec(const std::string& text, const std::string& path);
// Reads and parses the file at `path`; `spec` and `working_dir` are made absolute, relative to
// the file's folder, which is also a command job's working_dir unless it names one.
Result<JobSpec> load_job_spec(const std::string& path);

// The spec as JSON (every field, defaults included) and back; job_spec_from_json applies the
// same checks as the YAML parser, with `what` naming the source in errors.
nlohmann::json to_json(const JobSpec& s);
Result<JobSpec> job_spec_from_json(const nlohmann::json& j, const std::string& what);

// Reads YAML or JSON `text` (a mapping) as JSON: quoted text stays text, plain scalars read as
// numbers, true/false or null when they read fully as one. Errors name `path` and the line
// (text that is not UTF-8, YAML syntax, not a mapping: `what` says what it should be).
Result<nlohmann::json> yaml_text_to_json(const std::string& text, const std::string& path,
                                         const std::string& what);

// "2GiB", "512MiB", "1.5G", "100M", "64k" or a number of bytes -> bytes (binary and decimal
// suffixes as written). Errors name `what`.
Result<int64_t> parse_bytes(const std::string& text, const std::string& what);
// "90s", "30m", "2h", "1d" or a number of seconds -> seconds. Errors name `what`.
Result<int64_t> parse_duration_seconds(const std::string& text, const std::string& what);

}  // namespace dlsys::jobs
