// `dlsys search`: hyperparameter searches (docs/search.md): validate a search spec, submit it,
// list, show and cancel searches, on a running server (/api/v1/searches; its training service
// runs the trials) or on a data directory in process (stored there; a `dlsys server` on that
// directory runs it).
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "cli/client_options.h"
#include "cli/commands.h"
#include "core/json_get.h"
#include "jobs/job_process.h"
#include "jobs/search_policy.h"
#include "jobs/search_routes.h"
#include "jobs/search_spec.h"
#include "train/spec.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;

struct SearchArgs : ClientArgs {
  std::string spec, state;
  int64_t id = 0;
  int limit = 50;
  bool wait = false;
};

}  // namespace

Status check_search_trial(const jobs::JobSpec& trial, bool extended) {
  DLSYS_RETURN_IF_ERROR(check_job_spec(trial));
  if (!extended) return Status::OK();
  auto spec = train::load_train_spec(trial.spec, jobs::train_overrides(trial, 0));
  if (spec.ok() && spec->schedule.kind == train::ScheduleKind::kCosine)
    return Status::Invalid(
        "the trial's schedule is cosine: asha continues promoted trials from their checkpoints, "
        "which a cosine schedule's rates (set by the number of epochs) do not allow; use "
        "train.schedule.name constant or step (e.g. trial.hyperparameters: "
        "{{train.schedule.name: constant}})");
  return Status::OK();
}

namespace {

Status check_trials(const jobs::SearchSpec& s) {
  const auto params = jobs::trial_params(s);
  if (params.empty()) return Status::Invalid("the search draws no trials");
  const int64_t epochs = jobs::rung_epochs(s).front();
  for (size_t i = 0; i < params.size() && i < 20; ++i)
    DLSYS_RETURN_IF_ERROR(
        check_search_trial(jobs::trial_job(s, s.name, static_cast<int64_t>(i), params[i], epochs),
                           s.asha)
            .with_context(fmt::format("trial {} ({})", i, params[i].dump())));
  return Status::OK();
}

std::string rungs_text(const std::vector<int64_t>& rungs) {
  std::string out;
  for (int64_t e : rungs) out += (out.empty() ? "" : ", ") + std::to_string(e);
  return out;
}

int validate(const SearchArgs& a) {
  auto s = jobs::load_search_spec(a.spec);
  if (!s.ok()) return fail(s.status().message() + " (docs/search.md describes the fields)");
  if (Status st = check_trials(*s); !st.ok()) return fail(st.message());
  if (a.json) {
    std::printf("%s\n", jobs::to_json(*s).dump().c_str());
    return 0;
  }
  const auto params = jobs::trial_params(*s);
  std::printf("%s: a %s search '%s' of %zu trials of %s, %lld at a time, %s %s\n", a.spec.c_str(),
              s->grid ? "grid" : "random", s->name.c_str(), params.size(), s->trial.spec.c_str(),
              static_cast<long long>(s->parallelism), s->maximize ? "maximizing" : "minimizing",
              s->metric.c_str());
  const auto rungs = jobs::rung_epochs(*s);
  if (s->asha)
    std::printf("  asha: rungs of %s epochs, the best 1/%lld of each rung go on\n",
                rungs_text(rungs).c_str(), static_cast<long long>(s->reduction_factor));
  else
    std::printf(
        "  every trial trains %s\n",
        rungs.front() > 0
            ? (std::to_string(rungs.front()) + (rungs.front() == 1 ? " epoch" : " epochs")).c_str()
            : "its spec's epochs");
  return 0;
}

Result<Connection> connect_searches(const ClientArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(Connection c, connect(a));
  if (c.backend) {
    jobs::SearchRoutesOptions o;
    o.validate = check_search_trial;
    jobs::add_search_routes(c.backend->router(), c.backend->store(), o);
  }
  return c;
}

template <typename Fn>
int with_searches(const SearchArgs& a, Fn&& fn) {
  auto c = connect_searches(a);
  if (!c.ok()) return fail(c.status().message());
  Status st = with_where(fn(*c), *c);
  if (!st.ok()) return fail(st.message());
  return 0;
}

std::string value_text(const json& v) {
  return v.is_number() ? fmt::format("{:.4f}", v.get<double>()) : "-";
}

// The trials of search `j` (GET /api/v1/searches/{id}) as a table.
void print_trials(const json& j) {
  std::vector<std::vector<std::string>> rows = {
      {"TRIAL", "STATE", "EPOCHS", "JOB", "CORE-S", "RESULTS BY RUNG", "PARAMS"}};
  json trials = j.value("trials", json::array());
  for (const json& t : trials) {
    std::string results;
    for (const json& v : t.value("results", json::array()))
      results += (results.empty() ? "" : " ") + value_text(v);
    std::string params;
    const json p = t.value("params", json::object());
    for (const auto& [k, v] : p.items())
      params += (params.empty() ? "" : " ") + k + "=" +
                (v.is_number_float() ? fmt::format("{:.4g}", v.get<double>())
                 : v.is_string()     ? v.get<std::string>()
                                     : v.dump());
    std::string state = t.value("state", "");
    if (t.value("trial", int64_t{-1}) == j.value("best_trial", int64_t{-2})) state += " (best)";
    rows.push_back({std::to_string(t.value("trial", int64_t{0})), state,
                    t.contains("epochs") ? std::to_string(t.value("epochs", int64_t{0})) : "-",
                    std::to_string(t.value("job_id", int64_t{0})),
                    fmt::format("{:.1f}", t.value("core_seconds", 0.0)),
                    results.empty() ? "-" : results, params});
  }
  print_table(rows);
}

void print_summary(const json& j) {
  std::printf("search %lld '%s': %s, %s %s; %zu of %lld trials started; rungs %s epochs\n",
              static_cast<long long>(j.value("id", int64_t{0})), j.value("name", "").c_str(),
              j.value("state", "").c_str(),
              j.value("mode", "max") == "max" ? "maximizing" : "minimizing",
              j.value("metric", "").c_str(), j.value("trials", json::array()).size(),
              static_cast<long long>(j.value("trials_total", int64_t{0})),
              rungs_text(j.value("rungs", std::vector<int64_t>{})).c_str());
  if (!j.value("end_reason", "").empty())
    std::printf("reason: %s\n", j.value("end_reason", "").c_str());
}

bool ended(const std::string& state) {
  return state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED";
}

Status show_best(const json& j) {
  const int64_t best = j.value("best_trial", int64_t{-1});
  if (best < 0) return Status::OK();
  for (const json& t : j.value("trials", json::array()))
    if (t.value("trial", int64_t{-1}) == best) {
      const json results = t.value("results", json::array());
      std::printf(
          "best: trial %lld, %s %s after %s epochs, params %s (run %lld)\n",
          static_cast<long long>(best), j.value("metric", "").c_str(),
          results.empty() ? "-" : value_text(results.back()).c_str(),
          t.contains("epochs") ? std::to_string(t.value("epochs", int64_t{0})).c_str() : "-",
          t.value("params", json::object()).dump().c_str(),
          static_cast<long long>(t.value("run_id", int64_t{0})));
    }
  return Status::OK();
}

Status submit(Connection& c, const SearchArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(jobs::SearchSpec s, jobs::load_search_spec(a.spec));
  DLSYS_RETURN_IF_ERROR(check_trials(s));
  DLSYS_ASSIGN_OR_RETURN(json j, c.client->call("POST", "/api/v1/searches", jobs::to_json(s)));
  DLSYS_ASSIGN_OR_RETURN(int64_t id,
                         json_get<int64_t>(j, "id", answer_to("POST", "/api/v1/searches")));
  if (a.json && !a.wait) {
    print_json(j);
    return Status::OK();
  }
  if (!a.json)
    std::printf("search %lld submitted: '%s', %lld trials, rungs of %s epochs\n",
                static_cast<long long>(id), s.name.c_str(),
                static_cast<long long>(j.value("trials_total", int64_t{0})),
                rungs_text(jobs::rung_epochs(s)).c_str());
  if (c.backend) {
    note(a.quiet, fmt::format("stored in data directory {}: a `dlsys server --data-dir {}` runs "
                              "it",
                              c.data_dir, c.data_dir));
    return Status::OK();
  }
  if (!a.wait) {
    std::printf("follow it: dlsys search show %lld   cancel it: dlsys search cancel %lld\n",
                static_cast<long long>(id), static_cast<long long>(id));
    return Status::OK();
  }
  // Progress: a line whenever a trial changes state or rung.
  const std::string target = "/api/v1/searches/" + std::to_string(id);
  std::map<int64_t, std::string> seen;
  while (true) {
    DLSYS_ASSIGN_OR_RETURN(json now, c.client->call("GET", target));
    for (const json& t : now.value("trials", json::array())) {
      const int64_t n = t.value("trial", int64_t{0});
      const json results = t.value("results", json::array());
      const int64_t epochs = t.value("epochs", int64_t{0});
      std::string line = fmt::format(
          "trial {} {} at {} epoch{}{}", n, t.value("state", ""),
          t.contains("epochs") ? std::to_string(epochs) : "-", epochs == 1 ? "" : "s",
          results.empty() ? "" : ": " + now.value("metric", "") + " " + value_text(results.back()));
      if (seen[n] != line && !a.json && !a.quiet) std::printf("%s\n", line.c_str());
      seen[n] = line;
    }
    std::fflush(stdout);
    const std::string state = now.value("state", "");
    if (ended(state)) {
      if (a.json) {
        print_json(now);
      } else {
        print_summary(now);
        DLSYS_RETURN_IF_ERROR(show_best(now));
      }
      if (state != "SUCCEEDED")
        return Status::Invalid("search {} {}: {}", id, state, now.value("end_reason", ""));
      return Status::OK();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // a poll of a remote state
  }
}

Status list(Connection& c, const SearchArgs& a) {
  std::string target = "/api/v1/searches?page_size=" + std::to_string(a.limit);
  if (!a.state.empty()) target += "&state=" + enc(a.state);
  DLSYS_ASSIGN_OR_RETURN(json page, c.client->call("GET", target));
  DLSYS_ASSIGN_OR_RETURN(json list, json_list(page, "searches", answer_to("GET", target)));
  if (a.json) {
    print_json(list);
    return Status::OK();
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "NAME", "OWNER", "STATE", "BEST TRIAL", "CREATED", "REASON"}};
  for (const json& j : list) {
    const int64_t best = j.value("best_trial", int64_t{-1});
    rows.push_back({std::to_string(j.value("id", int64_t{0})), j.value("name", ""),
                    j.value("owner", ""),
                    j.value("state", "") +
                        (j.value("cancel_requested", false) && j.value("state", "") == "RUNNING"
                             ? " (cancelling)"
                             : ""),
                    best >= 0 ? std::to_string(best) : "-",
                    format_time_ms(j.value("created_at", int64_t{0})), j.value("end_reason", "")});
  }
  print_table(rows);
  if (list.empty()) std::printf("(no searches%s)\n", a.state.empty() ? "" : " that match");
  return Status::OK();
}

Status show(Connection& c, const SearchArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json j, c.client->call("GET", "/api/v1/searches/" + std::to_string(a.id)));
  if (a.json) {
    print_json(j);
    return Status::OK();
  }
  print_summary(j);
  print_trials(j);
  return show_best(j);
}

Status cancel(Connection& c, const SearchArgs& a) {
  const std::string target = "/api/v1/searches/" + std::to_string(a.id) + "/cancel";
  DLSYS_ASSIGN_OR_RETURN(json j, c.client->call("POST", target, json::object()));
  if (a.json) {
    print_json(j);
    return Status::OK();
  }
  std::printf("search %lld is stopping: its trials' jobs are cancelled\n",
              static_cast<long long>(a.id));
  return Status::OK();
}

}  // namespace

void add_search(CLI::App& app, int* rc) {
  CLI::App* cmd =
      app.add_subcommand("search",
                         "Hyperparameter search: grid or random trials with ASHA early stopping "
                         "(docs/search.md)");
  cmd->require_subcommand(1);
  auto a = std::make_shared<SearchArgs>();
  CLI::App* v = cmd->add_subcommand(
      "validate", "Check a search spec (YAML or JSON) and its first trials; print what it runs");
  v->add_option("spec", a->spec, "The search spec file")->required();
  v->add_flag("--json", a->json, "Print the spec as the server stores it (JSON)");
  v->callback([a, rc] { *rc = validate(*a); });

  CLI::App* sub = cmd->add_subcommand("submit", "Start a search (a YAML or JSON spec)");
  add_client_options(sub, a.get());
  sub->add_option("spec", a->spec, "The search spec file")->required()->check(CLI::ExistingFile);
  sub->add_flag("--wait", a->wait,
                "Print each trial's progress until the search ends; the exit code says whether "
                "it succeeded");
  sub->callback([a, rc] { *rc = with_searches(*a, [&](Connection& c) { return submit(c, *a); }); });

  CLI::App* ls = cmd->add_subcommand("list", "List searches, newest first");
  add_client_options(ls, a.get());
  ls->add_option("--state", a->state, "running, succeeded, failed or cancelled");
  ls->add_option("--limit", a->limit, "Searches to list")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  ls->callback([a, rc] { *rc = with_searches(*a, [&](Connection& c) { return list(c, *a); }); });

  CLI::App* sh = cmd->add_subcommand("show", "Show a search: its trials, rungs and the best");
  add_client_options(sh, a.get());
  sh->add_option("id", a->id, "Search id")->required();
  sh->callback([a, rc] { *rc = with_searches(*a, [&](Connection& c) { return show(c, *a); }); });

  CLI::App* cn = cmd->add_subcommand("cancel", "Cancel a search and its running trials");
  add_client_options(cn, a.get());
  cn->add_option("id", a->id, "Search id")->required();
  cn->callback([a, rc] { *rc = with_searches(*a, [&](Connection& c) { return cancel(c, *a); }); });
}

}  // namespace dlsys::cli
