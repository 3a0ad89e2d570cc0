// `dlsys pipelines`: pipelines (issue 23, docs/pipelines.md). Today: validate a pipeline spec
// and print the steps in the order they run, with what each depends on. The runner, its REST
// API and the rest of the commands (create, run, runs, logs, cancel, retry) are being built.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/file_util.h"
#include "flow/pipeline_spec.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;

struct PipelinesArgs {
  std::string spec;
  bool json = false;
};

int validate(const PipelinesArgs& a) {
  auto text = read_file(a.spec);
  if (!text.ok()) return fail(text.status().message());
  auto p = flow::parse_pipeline_spec(*text, a.spec);
  if (!p.ok()) return fail(p.status().message() + " (docs/pipelines.md describes the fields)");
  if (a.json) {
    json steps = json::array();
    for (const std::string& name : p->order) {
      const flow::StepSpec* s = p->step(name);
      steps.push_back({{"name", s->name},
                       {"kind", s->kind},
                       {"depends_on", s->depends_on},
                       {"line", s->line},
                       {"retries", s->retries},
                       {"timeout_seconds", s->timeout_seconds},
                       {"cache", s->cache},
                       {"fan_out", !s->for_each.is_null()}});
    }
    std::printf("%s\n",
                json{{"name", p->name}, {"params", p->params}, {"steps", steps}}.dump().c_str());
    return 0;
  }
  std::printf("%s: pipeline '%s', %zu steps, in this order:\n", a.spec.c_str(), p->name.c_str(),
              p->steps.size());
  for (const std::string& name : p->order) {
    const flow::StepSpec* s = p->step(name);
    std::string after;
    for (const std::string& d : s->depends_on) after += (after.empty() ? "" : ", ") + d;
    std::printf("  %-16s %-14s%s%s\n", s->name.c_str(), s->kind.c_str(),
                after.empty() ? "" : (" after " + after).c_str(),
                s->for_each.is_null() ? "" : " (once per item of for_each)");
  }
  return 0;
}

}  // namespace

void add_pipelines(CLI::App& app, int* rc) {
  CLI::App* cmd =
      app.add_subcommand("pipelines",
                         "Pipelines: DAGs of data, training, evaluation, gate and deployment steps "
                         "(docs/pipelines.md; being built: validate today)");
  cmd->require_subcommand(1);
  auto a = std::make_shared<PipelinesArgs>();
  CLI::App* v = cmd->add_subcommand(
      "validate", "Check a pipeline spec (YAML or JSON); print its steps in the order they run");
  v->add_option("spec", a->spec, "The pipeline spec file")->required();
  v->add_flag("--json", a->json, "Print the steps, their dependencies and settings as JSON");
  v->callback([a, rc] { *rc = validate(*a); });
}

}  // namespace dlsys::cli
