// `dlsys jobs`: the training service's commands (issue 22). Today `jobs validate`, which checks a
// job spec as the service will; submit, list, show, logs and cancel come with the queue.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "jobs/job_spec.h"

namespace dlsys::cli {

namespace {

struct JobsArgs {
  std::string spec;
  bool json = false;
};

std::string summary(const jobs::JobSpec& s) {
  std::string what;
  switch (s.kind) {
    case jobs::JobKind::kTrain:
      what = s.spec.empty() ? "fine-tunes " + s.model.str() : "trains " + s.spec;
      break;
    case jobs::JobKind::kCommand: {
      for (const std::string& a : s.command) what += (what.empty() ? "runs " : " ") + a;
      break;
    }
    case jobs::JobKind::kPredict:
      what = "predicts with " + s.model.str() + " into dataset " + s.output_dataset;
      break;
  }
  if (s.has_dataset) what += " on " + s.dataset.str() + (s.split.empty() ? "" : ":" + s.split);
  return what;
}

}  // namespace

void add_jobs(CLI::App& app, int* rc) {
  CLI::App* jobs_cmd = app.add_subcommand("jobs", "Training-service jobs (being built: validate)");
  jobs_cmd->require_subcommand(1);
  auto a = std::make_shared<JobsArgs>();
  CLI::App* validate = jobs_cmd->add_subcommand(
      "validate", "Check a job spec (YAML or JSON, docs/jobs.md) and print what it runs");
  validate->add_option("spec", a->spec, "The job spec file")->required();
  validate->add_flag("--json", a->json, "Print the spec as the service stores it (JSON)");
  validate->callback([a, rc] {
    auto s = jobs::load_job_spec(a->spec);
    if (!s.ok()) {
      *rc = fail(s.status().message() + " (docs/jobs.md describes the fields)");
      return;
    }
    if (a->json) {
      std::printf("%s\n", jobs::to_json(*s).dump().c_str());
    } else {
      std::printf("%s: a %s job '%s' that %s\n", a->spec.c_str(), jobs::job_kind_name(s->kind),
                  s->name.c_str(), summary(*s).c_str());
      std::printf(
          "  resources: %lld thread%s, memory %s; priority %lld, retries %lld, %s\n",
          static_cast<long long>(s->resources.threads), s->resources.threads == 1 ? "" : "s",
          s->resources.memory_bytes
              ? human_bytes(static_cast<double>(s->resources.memory_bytes)).c_str()
              : "unlimited",
          static_cast<long long>(s->priority), static_cast<long long>(s->max_retries),
          s->max_run_seconds ? ("at most " + std::to_string(s->max_run_seconds) + " s").c_str()
                             : "no time limit");
    }
    *rc = 0;
  });
}

}  // namespace dlsys::cli
