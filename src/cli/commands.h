// The `dlsys` subcommands. Each registers itself on the CLI11 app and returns its exit code
// through `*rc` when run.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <map>

#include "core/status.h"

namespace dlsys::jobs {
struct JobSpec;  // jobs/job_spec.h
}  // namespace dlsys::jobs

namespace dlsys::cli {

void add_inspect(CLI::App& app, int* rc);
void add_run(CLI::App& app, int* rc);
void add_bench(CLI::App& app, int* rc);
// `serve` under `bench` (cmd_bench_serve.cpp), added by add_bench.
void add_bench_serve(CLI::App& bench, int* rc);
void add_profile(CLI::App& app, int* rc);
void add_quantize(CLI::App& app, int* rc);
void add_server(CLI::App& app, int* rc);
void add_train(CLI::App& app, int* rc);
void add_runs(CLI::App& app, int* rc);
void add_models(CLI::App& app, int* rc);
void add_deploy(CLI::App& app, int* rc);
void add_artifacts(CLI::App& app, int* rc);
void add_tokens(CLI::App& app, int* rc);
void add_data(CLI::App& app, int* rc);
void add_jobs(CLI::App& app, int* rc);
void add_search(CLI::App& app, int* rc);
void add_predict(CLI::App& app, int* rc);
void add_pipelines(CLI::App& app, int* rc);
void add_monitor(CLI::App& app, int* rc);
void add_notebook(CLI::App& app, int* rc);

// Checks a job spec beyond its own fields, as the service will run it: a train job's training
// spec read with its dataset and hyperparameters applied (cmd_jobs.cpp; the server checks
// submissions with it too).
dlsys::Status check_job_spec(const dlsys::jobs::JobSpec& j);
// Checks a search trial's job (check_job_spec) and, when `extended` (asha promotions continue
// trials from their checkpoints), that its schedule is not cosine (cmd_search.cpp; the server
// checks search submissions with it).
dlsys::Status check_search_trial(const dlsys::jobs::JobSpec& trial, bool extended);
// Checks that `path` is an ONNX model dlsys imports (the registry's check on new versions).
dlsys::Status validate_onnx_model(const std::string& path);
// Prints "error: <message>" to stderr; returns 1.
int fail(const std::string& message);
// "512 B", "74.5 KiB", "1.2 GiB".
std::string human_bytes(double bytes);
// A millisecond Unix time as local "YYYY-MM-DD HH:MM:SS"; "-" when `ms` is not a number.
std::string format_time_ms(const nlohmann::json& ms);
// Parses NAME=VALUE strings of --dim into a map; errors name the bad string.
dlsys::Result<std::map<std::string, int64_t>> parse_dims(const std::vector<std::string>& specs);

}  // namespace dlsys::cli
