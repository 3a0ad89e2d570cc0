// `dlsys pipelines`: pipelines (issue 23, docs/pipelines.md): validate a spec here; create,
// list, show, run (and follow), list runs, print a run's logs, cancel and retry on a dlsys
// server, whose runner (flow/pipeline_service.h) runs them.
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "api/request_util.h"
#include "cli/client_options.h"
#include "cli/commands.h"
#include "core/file_util.h"
#include "flow/pipeline_spec.h"
#include "jobs/job_spec.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;

struct PipelinesArgs : ClientArgs {
  std::string spec, name, state, event_id;
  std::vector<std::string> params;  // NAME=VALUE
  bool no_cache = false, wait = false;
  int64_t run = 0;
  int limit = 20;
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
    json triggers = json::array();
    for (const flow::TriggerSpec& t : p->triggers)
      triggers.push_back({{"kind", t.kind_name()}, {"value", t.value}, {"param", t.param}});
    std::printf(
        "%s\n",
        json{{"name", p->name}, {"params", p->params}, {"steps", steps}, {"triggers", triggers}}
            .dump()
            .c_str());
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
  for (const flow::TriggerSpec& t : p->triggers)
    std::printf("  trigger %s: %s%s\n", t.kind_name(), t.value.c_str(),
                t.param.empty() ? "" : (" -> params." + t.param).c_str());
  return 0;
}

template <typename Fn>
int with_server(const PipelinesArgs& a, Fn&& fn) {
  return with_client(
      a, [&](api::ApiClient& c) { return fn(c); }, /*server_only=*/true);
}

bool ended(const std::string& state) {
  return state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED";
}

std::string run_target(int64_t id) {
  return "/api/v1/pipelines/-/runs/" + std::to_string(id);
}

Status create(api::ApiClient& c, const PipelinesArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(std::string text, read_file(a.spec));
  // Checked here first: the same errors, with the file's own name.
  DLSYS_RETURN_IF_ERROR(flow::parse_pipeline_spec(text, a.spec).status());
  DLSYS_ASSIGN_OR_RETURN(
      json j, c.call("POST", "/api/v1/pipelines", json{{"spec", text}, {"file", a.spec}}));
  if (a.json) {
    print_json(j);
    return Status::OK();
  }
  std::printf("pipeline '%s' version %lld: %zu steps; run it with `dlsys pipelines run %s`\n",
              j.value("name", "").c_str(), static_cast<long long>(j.value("version", int64_t{0})),
              j.value("steps", json::array()).size(), j.value("name", "").c_str());
  return Status::OK();
}

Status list(api::ApiClient& c, const PipelinesArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json j, c.call("GET", "/api/v1/pipelines"));
  DLSYS_ASSIGN_OR_RETURN(json list,
                         json_list(j, "pipelines", answer_to("GET", "/api/v1/pipelines")));
  if (a.json) {
    print_json(list);
    return Status::OK();
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "VERSION", "OWNER", "UPDATED", "LAST RUN", "STATE"}};
  for (const json& p : list) {
    const json last = p.value("last_run", json());
    rows.push_back({p.value("name", ""), std::to_string(p.value("version", int64_t{0})),
                    p.value("owner", ""), format_time_ms(p.value("updated_at", int64_t{0})),
                    last.is_object() ? std::to_string(last.value("id", int64_t{0})) : "-",
                    last.is_object() ? last.value("state", "") : "-"});
  }
  print_table(rows);
  if (list.empty()) std::printf("(no pipelines: create one with `dlsys pipelines create SPEC`)\n");
  return Status::OK();
}

std::string step_line(const json& s) {
  const int64_t item = s.value("item", int64_t{-1});
  std::string name = s.value("step", "") + (item >= 0 ? fmt::format("[{}]", item) : "");
  std::string what = s.value("state", "");
  if (s.value("cached", false)) what += " (cached)";
  const int64_t job = s.value("job_id", int64_t{0});
  std::string extra = job > 0 ? fmt::format("job {}", job) : "";
  const std::string reason = s.value("end_reason", "");
  if (!reason.empty()) extra += (extra.empty() ? "" : "; ") + reason;
  return fmt::format("  {:<18} {:<12} {:<20} {}", name, s.value("kind", ""), what, extra);
}

// The outputs a run's steps gave, one line each (references and small values).
void print_outputs(const json& run) {
  for (const json& s : run.value("steps", json::array())) {
    const json out = s.value("outputs", json::object());
    if (out.empty()) continue;
    std::string line;
    for (auto it = out.begin(); it != out.end(); ++it) {
      if (it.key() == "explanation") continue;
      std::string v = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
      if (v.size() > 40) v = v.substr(0, 37) + "...";
      line += (line.empty() ? "" : ", ") + it.key() + "=" + v;
    }
    const int64_t item = s.value("item", int64_t{-1});
    std::printf("  %s%s: %s\n", s.value("step", "").c_str(),
                item >= 0 ? fmt::format("[{}]", item).c_str() : "", line.c_str());
  }
}

void print_run(const json& r) {
  std::printf("pipeline run %lld of '%s' (version %lld): %s%s\n",
              static_cast<long long>(r.value("id", int64_t{0})), r.value("pipeline", "").c_str(),
              static_cast<long long>(r.value("pipeline_version", int64_t{0})),
              r.value("state", "").c_str(),
              r.value("end_reason", "").empty() ? "" : (" - " + r.value("end_reason", "")).c_str());
  std::printf("  trigger %s%s, attempt %lld, params %s\n", r.value("trigger", "").c_str(),
              r.value("event_id", "").empty() ? "" : (" (" + r.value("event_id", "") + ")").c_str(),
              static_cast<long long>(r.value("attempt", int64_t{1})),
              r.value("params", json::object()).dump().c_str());
  for (const json& s : r.value("steps", json::array())) std::printf("%s\n", step_line(s).c_str());
}

// Follows run `id` until it ends: a line for each step that changes state.
Status follow(api::ApiClient& c, const PipelinesArgs& a, int64_t id) {
  std::map<std::string, std::string> seen;
  const auto t0 = std::chrono::steady_clock::now();
  while (true) {
    DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", run_target(id)));
    for (const json& s : r.value("steps", json::array())) {
      const std::string key = s.value("step", "") + "#" + std::to_string(s.value("item", -1));
      const std::string line = step_line(s);
      if (seen[key] != line && s.value("state", "") != "WAITING" && !a.json && !a.quiet) {
        const double t =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("[%6.1fs]%s\n", t, line.c_str());
        std::fflush(stdout);
      }
      seen[key] = line;
    }
    const std::string state = r.value("state", "");
    if (ended(state)) {
      if (a.json) {
        print_json(r);
      } else {
        std::printf(
            "pipeline run %lld %s%s\n", static_cast<long long>(id), state.c_str(),
            r.value("end_reason", "").empty() ? "" : (": " + r.value("end_reason", "")).c_str());
        print_outputs(r);
      }
      if (state != "SUCCEEDED")
        return Status::Invalid("pipeline run {} {}; see `dlsys pipelines logs {}`", id, state, id);
      return Status::OK();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a poll of a remote state
  }
}

Status run(api::ApiClient& c, const PipelinesArgs& a) {
  json params = json::object();
  for (const std::string& kv : a.params) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return Status::Invalid("--param '{}' must be NAME=VALUE", kv);
    // Numbers, true/false and lists read as YAML would; the rest is text.
    const std::string v = kv.substr(eq + 1);
    auto parsed = jobs::yaml_text_to_json("v: " + v, "--param", "NAME=VALUE");
    params[kv.substr(0, eq)] = parsed.ok() && parsed->contains("v") ? (*parsed)["v"] : json(v);
  }
  json body = {{"params", params}, {"no_cache", a.no_cache}};
  if (!a.event_id.empty()) body["event_id"] = a.event_id;
  const std::string target = "/api/v1/pipelines/" + enc(a.name) + "/runs";
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("POST", target, body));
  const int64_t id = r.value("id", int64_t{0});
  if (!a.wait) {
    if (a.json) {
      print_json(r);
    } else {
      std::printf("pipeline run %lld of '%s' %s; follow it with `dlsys pipelines show %lld`\n",
                  static_cast<long long>(id), a.name.c_str(),
                  r.value("created", true) ? "started" : "already started for this event",
                  static_cast<long long>(id));
    }
    return Status::OK();
  }
  if (!a.json && !a.quiet)
    std::printf("pipeline run %lld of '%s' started\n", static_cast<long long>(id), a.name.c_str());
  return follow(c, a, id);
}

Status runs(api::ApiClient& c, const PipelinesArgs& a) {
  std::string target = "/api/v1/pipelines/" + enc(a.name.empty() ? "-" : a.name) +
                       "/runs?page_size=" + std::to_string(a.limit);
  if (!a.state.empty()) target += "&state=" + enc(a.state);
  DLSYS_ASSIGN_OR_RETURN(json page, c.call("GET", target));
  DLSYS_ASSIGN_OR_RETURN(json list, json_list(page, "runs", answer_to("GET", target)));
  if (a.json) {
    print_json(list);
    return Status::OK();
  }
  std::vector<std::vector<std::string>> rows = {
      {"RUN", "PIPELINE", "STATE", "TRIGGER", "OWNER", "CREATED", "REASON"}};
  for (const json& r : list)
    rows.push_back({std::to_string(r.value("id", int64_t{0})), r.value("pipeline", ""),
                    r.value("state", "") +
                        (r.value("cancel_requested", false) && r.value("state", "") == "RUNNING"
                             ? " (cancelling)"
                             : ""),
                    r.value("trigger", ""), r.value("owner", ""),
                    format_time_ms(r.value("created_at", int64_t{0})), r.value("end_reason", "")});
  print_table(rows);
  if (list.empty()) std::printf("(no runs%s)\n", a.state.empty() ? "" : " that match");
  return Status::OK();
}

Status show(api::ApiClient& c, const PipelinesArgs& a) {
  // A number is a run; a name a pipeline (names start with a letter).
  if (!a.name.empty() && std::isdigit(static_cast<unsigned char>(a.name[0]))) {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, api::parse_int(a.name, "run id"));
    if (a.wait) return follow(c, a, id);
    DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", run_target(id)));
    if (a.json) {
      print_json(r);
      return Status::OK();
    }
    print_run(r);
    print_outputs(r);
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(json p, c.call("GET", "/api/v1/pipelines/" + enc(a.name)));
  if (a.json) {
    print_json(p);
    return Status::OK();
  }
  std::printf("pipeline '%s' version %lld (owner %s): %s\n", p.value("name", "").c_str(),
              static_cast<long long>(p.value("version", int64_t{0})), p.value("owner", "").c_str(),
              p.value("description", "").c_str());
  std::printf("  params %s\n", p.value("params", json::object()).dump().c_str());
  for (const json& t : p.value("triggers", json::array()))
    std::printf("  trigger %s: %s%s\n", t.value("kind", "").c_str(), t.value("value", "").c_str(),
                t.contains("param") ? (" -> params." + t.value("param", "")).c_str() : "");
  for (const json& s : p.value("steps", json::array())) {
    std::string after;
    for (const json& d : s.value("depends_on", json::array()))
      after += (after.empty() ? "" : ", ") + d.get<std::string>();
    std::printf("  %-18s %-14s%s\n", s.value("name", "").c_str(), s.value("kind", "").c_str(),
                after.empty() ? "" : (" after " + after).c_str());
  }
  return Status::OK();
}

Status logs(api::ApiClient& c, const PipelinesArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json j, c.call("GET", run_target(a.run) + "/logs"));
  if (a.json) {
    print_json(j);
    return Status::OK();
  }
  for (const json& s : j.value("steps", json::array())) {
    const int64_t item = s.value("item", int64_t{-1});
    std::printf(
        "== %s%s: %s%s%s\n", s.value("step", "").c_str(),
        item >= 0 ? fmt::format("[{}]", item).c_str() : "", s.value("state", "").c_str(),
        s.value("cached", false) ? " (cached)" : "",
        s.value("end_reason", "").empty() ? "" : (" - " + s.value("end_reason", "")).c_str());
    const std::string log = s.value("log", "");
    if (!log.empty()) std::printf("%s%s", log.c_str(), log.back() == '\n' ? "" : "\n");
  }
  return Status::OK();
}

Status cancel_or_retry(api::ApiClient& c, const PipelinesArgs& a, const char* verb) {
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("POST", run_target(a.run) + "/" + verb, json::object()));
  if (a.json) {
    print_json(r);
    return Status::OK();
  }
  if (std::string(verb) == "cancel")
    std::printf("pipeline run %lld is stopping: its running steps are cancelled\n",
                static_cast<long long>(a.run));
  else
    std::printf(
        "pipeline run %lld runs again (attempt %lld): the steps that did not succeed and "
        "what depends on them\n",
        static_cast<long long>(a.run), static_cast<long long>(r.value("attempt", 0)));
  if (a.wait) return follow(c, a, a.run);
  return Status::OK();
}

}  // namespace

void add_pipelines(CLI::App& app, int* rc) {
  CLI::App* cmd = app.add_subcommand(
      "pipelines",
      "Pipelines: DAGs of data, training, evaluation, gate and deployment steps, run by a dlsys "
      "server (docs/pipelines.md)");
  cmd->require_subcommand(1);
  auto a = std::make_shared<PipelinesArgs>();
  CLI::App* v = cmd->add_subcommand(
      "validate", "Check a pipeline spec (YAML or JSON); print its steps in the order they run");
  v->add_option("spec", a->spec, "The pipeline spec file")->required();
  v->add_flag("--json", a->json, "Print the steps, their dependencies and settings as JSON");
  v->callback([a, rc] { *rc = validate(*a); });

  CLI::App* cr = cmd->add_subcommand(
      "create", "Create a pipeline on the server from a spec, or update it (a new version)");
  add_client_options(cr, a.get());
  cr->add_option("spec", a->spec, "The pipeline spec file")->required()->check(CLI::ExistingFile);
  cr->callback(
      [a, rc] { *rc = with_server(*a, [&](api::ApiClient& c) { return create(c, *a); }); });

  CLI::App* ls = cmd->add_subcommand("list", "List the pipelines and their last runs");
  add_client_options(ls, a.get());
  ls->callback([a, rc] { *rc = with_server(*a, [&](api::ApiClient& c) { return list(c, *a); }); });

  CLI::App* sh = cmd->add_subcommand(
      "show", "Show a pipeline (by name: its steps) or a run (by id: its steps, states, outputs)");
  add_client_options(sh, a.get());
  sh->add_option("what", a->name, "A pipeline's name or a run's id")->required();
  sh->add_flag("--wait", a->wait,
               "A run: print each step's progress until it ends; the exit code says whether it "
               "succeeded");
  sh->callback([a, rc] { *rc = with_server(*a, [&](api::ApiClient& c) { return show(c, *a); }); });

  CLI::App* rn = cmd->add_subcommand("run", "Start a run of a pipeline");
  add_client_options(rn, a.get());
  rn->add_option("name", a->name, "The pipeline")->required();
  rn->add_option("--param,-p", a->params, "NAME=VALUE: a parameter for this run (repeatable)");
  rn->add_flag("--no-cache", a->no_cache, "Run every step, reusing no cached result");
  rn->add_option("--event-id", a->event_id,
                 "Start at most one run for this event (a second start answers the first run)");
  rn->add_flag("--wait", a->wait,
               "Print each step's progress until the run ends; the exit code says whether it "
               "succeeded");
  rn->callback([a, rc] { *rc = with_server(*a, [&](api::ApiClient& c) { return run(c, *a); }); });

  CLI::App* rs = cmd->add_subcommand("runs", "List runs, newest first (of one pipeline, or all)");
  add_client_options(rs, a.get());
  rs->add_option("name", a->name, "Only this pipeline's runs");
  rs->add_option("--state", a->state, "running, succeeded, failed or cancelled");
  rs->add_option("--limit", a->limit, "Runs to list")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  rs->callback([a, rc] { *rc = with_server(*a, [&](api::ApiClient& c) { return runs(c, *a); }); });

  CLI::App* lg = cmd->add_subcommand(
      "logs", "Print a run's steps and the end of what each step's job printed");
  add_client_options(lg, a.get());
  lg->add_option("run", a->run, "The run's id")->required();
  lg->callback([a, rc] { *rc = with_server(*a, [&](api::ApiClient& c) { return logs(c, *a); }); });

  CLI::App* cn = cmd->add_subcommand("cancel", "Cancel a run: its running steps are stopped");
  add_client_options(cn, a.get());
  cn->add_option("run", a->run, "The run's id")->required();
  cn->callback([a, rc] {
    *rc = with_server(*a, [&](api::ApiClient& c) { return cancel_or_retry(c, *a, "cancel"); });
  });

  CLI::App* rt = cmd->add_subcommand(
      "retry",
      "Run a failed or cancelled run again: only what did not succeed and what depends on it");
  add_client_options(rt, a.get());
  rt->add_option("run", a->run, "The run's id")->required();
  rt->add_flag("--wait", a->wait, "Follow it until it ends");
  rt->callback([a, rc] {
    *rc = with_server(*a, [&](api::ApiClient& c) { return cancel_or_retry(c, *a, "retry"); });
  });
}

}  // namespace dlsys::cli
