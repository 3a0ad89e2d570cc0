// The tracking and registry commands: `dlsys runs`, `dlsys models`, `dlsys artifacts`,
// `dlsys experiments` and `dlsys tokens`. They talk to a server (--server URL or
// $DLSYS_SERVER; by default the local one on 127.0.0.1:8080 when it runs) or, with --data-dir
// or when no local server runs, to the data directory directly through the same API code.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "api/client.h"
#include "api/services.h"
#include "cli/client_options.h"
#include "cli/commands.h"
#include "core/json_get.h"
#include "meta/model_registry.h"
#include "meta/run_tracking.h"

namespace dlsys::cli {
namespace {

using json = nlohmann::json;

// ---- runs ----

struct RunsArgs : ClientArgs {
  std::string experiment, filter, order_by, page_token, status = "finished";
  int limit = 50;
  std::vector<int64_t> ids;
};

Status runs_list(api::ApiClient& c, const RunsArgs& a) {
  std::string target = fmt::format("/api/v1/runs?page_size={}", a.limit);
  if (!a.experiment.empty()) {
    std::string id = a.experiment;
    if (id.find_first_not_of("0123456789") != std::string::npos) {
      const std::string lookup = "/api/v1/experiments?name=" + enc(id);
      DLSYS_ASSIGN_OR_RETURN(json e, c.call("GET", lookup));
      DLSYS_ASSIGN_OR_RETURN(auto exps,
                             records<meta::Experiment>(e, "experiments", answer_to("GET", lookup)));
      if (exps.empty())
        return Status::Invalid("{}: 'experiments' is empty", answer_to("GET", lookup));
      id = std::to_string(exps[0].id);
    }
    target += "&experiment_ids=" + id;
  }
  if (!a.filter.empty()) target += "&filter=" + enc(a.filter);
  if (!a.order_by.empty()) target += "&order_by=" + enc(a.order_by);
  if (!a.page_token.empty()) target += "&page_token=" + enc(a.page_token);
  DLSYS_ASSIGN_OR_RETURN(json page, c.call("GET", target));
  if (a.json) {
    print_json(page);
    return Status::OK();
  }
  const std::string what = answer_to("GET", target);
  DLSYS_ASSIGN_OR_RETURN(auto runs, records<meta::Run>(page, "runs", what));
  DLSYS_ASSIGN_OR_RETURN(auto next, json_get_optional<std::string>(page, "next_page_token", what));
  std::vector<std::vector<std::string>> rows = {
      {"ID", "EXP", "NAME", "STATUS", "STARTED", "METRICS"}};
  for (auto& r : runs) {
    std::string metrics;
    for (auto& [k, m] : r.metrics)
      metrics += (metrics.empty() ? "" : " ") + k + "=" + number_text(m.value);
    rows.push_back({std::to_string(r.id), std::to_string(r.experiment_id), r.name, r.status,
                    format_time_ms(r.start_time), metrics});
  }
  print_table(rows);
  if (next) std::printf("more: --page-token %s\n", next->c_str());
  return Status::OK();
}

// `runs end ID --status finished|failed|killed`: PATCH /api/v1/runs/{id}.
Status runs_end(api::ApiClient& c, const RunsArgs& a) {
  std::string status = a.status;
  for (char& ch : status) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (status != "FINISHED" && status != "FAILED" && status != "KILLED")
    return Status::Invalid("--status '{}' must be finished, failed or killed", a.status);
  const std::string target = fmt::format("/api/v1/runs/{}", a.ids.at(0));
  DLSYS_ASSIGN_OR_RETURN(json rj, c.call("PATCH", target, {{"status", status}}));
  if (a.json) {
    print_json(rj);
    return Status::OK();
  }
  std::printf("run %lld ended: %s\n", static_cast<long long>(a.ids[0]), status.c_str());
  return Status::OK();
}

Status runs_show(api::ApiClient& c, const RunsArgs& a) {
  if (a.ids.size() != 1) return Status::Invalid("runs show takes one run id");
  const std::string run_target = fmt::format("/api/v1/runs/{}", a.ids[0]);
  const std::string arts_target = fmt::format("/api/v1/runs/{}/artifacts", a.ids[0]);
  DLSYS_ASSIGN_OR_RETURN(json rj, c.call("GET", run_target));
  DLSYS_ASSIGN_OR_RETURN(meta::Run r, meta::from_json<meta::Run>(rj, answer_to("GET", run_target)));
  DLSYS_ASSIGN_OR_RETURN(json arts, c.call("GET", arts_target));
  DLSYS_ASSIGN_OR_RETURN(auto artifacts, records<meta::ArtifactInfo>(
                                             arts, "artifacts", answer_to("GET", arts_target)));
  if (a.json) {
    rj["artifacts"] = arts["artifacts"];
    print_json(rj);
    return Status::OK();
  }
  std::printf("run %lld  %s  experiment %lld  %s\n", static_cast<long long>(r.id), r.status.c_str(),
              static_cast<long long>(r.experiment_id), r.name.c_str());
  std::printf("started %s  ended %s  by %s\n", format_time_ms(r.start_time).c_str(),
              format_time_ms(r.end_time ? json(*r.end_time) : json()).c_str(),
              r.created_by.c_str());
  if (r.status == "RUNNING" && r.heartbeat_time > 0)
    std::printf("last heard from %s\n", format_time_ms(r.heartbeat_time).c_str());
  if (!r.end_reason.empty()) std::printf("ended by the server: %s\n", r.end_reason.c_str());
  for (const auto& [section, kvs] : {std::pair{"params", &r.params}, std::pair{"tags", &r.tags}}) {
    if (kvs->empty()) continue;
    std::printf("%s:\n", section);
    for (auto& [k, v] : *kvs) std::printf("  %s = %s\n", k.c_str(), v.c_str());
  }
  if (!r.metrics.empty()) {
    std::printf("metrics (latest):\n");
    for (auto& [k, m] : r.metrics)
      std::printf("  %s = %s (step %lld)\n", k.c_str(), number_text(m.value).c_str(),
                  static_cast<long long>(m.step));
  }
  if (!artifacts.empty()) {
    std::printf("artifacts:\n");
    for (auto& x : artifacts)
      std::printf("  %s  %lld bytes  sha256:%s\n", x.path.c_str(), static_cast<long long>(x.size),
                  x.sha256.substr(0, 12).c_str());
  }
  return Status::OK();
}

Status runs_compare(api::ApiClient& c, const RunsArgs& a) {
  if (a.ids.size() < 2) return Status::Invalid("runs compare takes two or more run ids");
  std::vector<json> answers;
  std::vector<meta::Run> runs;
  for (int64_t id : a.ids) {
    const std::string target = fmt::format("/api/v1/runs/{}", id);
    DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", target));
    DLSYS_ASSIGN_OR_RETURN(meta::Run run, meta::from_json<meta::Run>(r, answer_to("GET", target)));
    answers.push_back(std::move(r));
    runs.push_back(std::move(run));
  }
  if (a.json) {
    print_json(answers);
    return Status::OK();
  }
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"", "status"};
  rows.push_back({"RUN"});
  for (auto& r : runs) rows[0].push_back(std::to_string(r.id));
  std::vector<std::string> status_row = {"status"};
  for (auto& r : runs) status_row.push_back(r.status);
  rows.push_back(status_row);
  // Each run's params and latest metric values as text, by section.
  auto cell = [](const meta::Run& r, bool metrics, const std::string& k) -> std::string {
    if (metrics) {
      auto it = r.metrics.find(k);
      return it == r.metrics.end() ? "-" : number_text(it->second.value);
    }
    auto it = r.params.find(k);
    return it == r.params.end() ? "-" : it->second;
  };
  for (const char* section : {"params", "metrics"}) {
    const bool metrics = section[0] == 'm';
    std::set<std::string> keys;
    for (auto& r : runs) {
      if (metrics)
        for (auto& [k, _] : r.metrics) keys.insert(k);
      else
        for (auto& [k, _] : r.params) keys.insert(k);
    }
    for (const std::string& k : keys) {
      std::vector<std::string> row = {std::string(section) + "." + k};
      std::set<std::string> distinct;
      for (auto& r : runs) {
        std::string v = cell(r, metrics, k);
        distinct.insert(v);
        row.push_back(v);
      }
      if (distinct.size() > 1) row[0] = "* " + row[0];  // differs between runs
      rows.push_back(row);
    }
  }
  print_table(rows);
  return Status::OK();
}

// ---- models ----

struct ModelsArgs : ClientArgs {
  std::string name, artifact = "model.onnx", file, experiment = "models", description, alias,
                    output;
  int64_t run = 0, version = 0;
  bool remove = false, new_run = false;
};

Status models_list(api::ApiClient& c, const ModelsArgs& a) {
  const std::string target = "/api/v1/models?page_size=1000";
  DLSYS_ASSIGN_OR_RETURN(json page, c.call("GET", target));
  if (a.json) {
    print_json(page);
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(auto models,
                         records<meta::Model>(page, "models", answer_to("GET", target)));
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "VERSIONS", "LATEST", "ALIASES", "UPDATED"}};
  for (auto& m : models) {
    std::string aliases;
    for (auto& [k, v] : m.aliases)
      aliases += (aliases.empty() ? "" : " ") + k + "=v" + std::to_string(v);
    rows.push_back({m.name, std::to_string(m.version_count),
                    m.latest_version ? std::to_string(*m.latest_version) : "-", aliases,
                    format_time_ms(m.updated_at)});
  }
  print_table(rows);
  return Status::OK();
}

Status models_register(api::ApiClient& c, const ModelsArgs& a) {
  if (a.new_run && a.run != 0)
    return Status::Invalid("--new-run and --run {} both say which run holds the file: give one",
                           a.run);
  if (a.new_run && a.file.empty())
    return Status::Invalid("--new-run makes a run to hold --file MODEL.onnx: give the file");
  if (a.file.empty() && a.run == 0)
    return Status::Invalid(
        "say where the model comes from: --run ID (with --artifact PATH) or "
        "--file MODEL.onnx");
  if (!a.file.empty()) {
    // Checked here first, so that a file that is not a model leaves nothing behind and the
    // error names the user's file (the server checks it again).
    if (Status st = validate_onnx_model(a.file); !st.ok())
      return Status(st.code(), fmt::format("{} cannot be registered: {}", a.file, st.message()));
  }
  auto created =
      c.call("POST", "/api/v1/models", {{"name", a.name}, {"description", a.description}});
  if (!created.ok() && created.status().code() != StatusCode::kAlreadyExists)
    return created.status();
  const std::string versions = "/api/v1/models/" + enc(a.name) + "/versions";
  json v;
  std::optional<int64_t> run;
  if (!a.file.empty() && a.run == 0 && !a.new_run) {
    // The file becomes the version's own artifact: no run.
    const std::string target = versions + "/upload?artifact_path=" + enc(a.artifact) +
                               "&description=" + enc(a.description);
    DLSYS_ASSIGN_OR_RETURN(v, c.upload(target, a.file, "POST"));
  } else {
    run = a.run;
    if (a.new_run) {
      // Asked for: a finished run in --experiment that holds the file as its artifact.
      DLSYS_ASSIGN_OR_RETURN(json r, c.call("POST", "/api/v1/runs",
                                            {{"experiment", a.experiment},
                                             {"name", "register " + a.name},
                                             {"tags", {{"source_file", a.file}}}}));
      DLSYS_ASSIGN_OR_RETURN(run, json_get<int64_t>(r, "id", answer_to("POST", "/api/v1/runs")));
    }
    if (!a.file.empty()) {
      DLSYS_RETURN_IF_ERROR(c.upload(fmt::format("/api/v1/runs/{}/artifacts/{}", *run,
                                                 api::url_encode(a.artifact, true)),
                                     a.file)
                                .status());
      if (a.new_run)
        DLSYS_RETURN_IF_ERROR(
            c.call("PATCH", fmt::format("/api/v1/runs/{}", *run), {{"status", "FINISHED"}})
                .status());
    }
    DLSYS_ASSIGN_OR_RETURN(
        v,
        c.call("POST", versions,
               {{"run_id", *run}, {"artifact_path", a.artifact}, {"description", a.description}}));
  }
  if (a.json) {
    print_json(v);
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                         meta::from_json<meta::ModelVersion>(v, answer_to("POST", versions)));
  if (run)
    std::printf("registered %s version %lld from run %lld (%s, sha256:%s)\n", a.name.c_str(),
                static_cast<long long>(mv.version), static_cast<long long>(*run),
                a.artifact.c_str(), mv.sha256.substr(0, 12).c_str());
  else
    std::printf("registered %s version %lld from %s (no run; sha256:%s)\n", a.name.c_str(),
                static_cast<long long>(mv.version), a.file.c_str(),
                mv.sha256.substr(0, 12).c_str());
  return Status::OK();
}

Status models_versions(api::ApiClient& c, const ModelsArgs& a) {
  const std::string target = "/api/v1/models/" + enc(a.name) + "/versions";
  DLSYS_ASSIGN_OR_RETURN(json v, c.call("GET", target));
  if (a.json) {
    print_json(v);
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(auto versions,
                         records<meta::ModelVersion>(v, "versions", answer_to("GET", target)));
  std::vector<std::vector<std::string>> rows = {
      {"VERSION", "STATUS", "RUN", "ARTIFACT", "ALIASES", "CREATED"}};
  for (auto& x : versions) {
    std::string aliases;
    for (auto& al : x.aliases) aliases += (aliases.empty() ? "" : " ") + al;
    rows.push_back({std::to_string(x.version), x.status, x.run_id ? std::to_string(*x.run_id) : "-",
                    x.artifact_path, aliases, format_time_ms(x.created_at)});
  }
  print_table(rows);
  return Status::OK();
}

// `models get NAME@ALIAS|NAME@VERSION -o FILE`: the version's ONNX file (GET
// /api/v1/models/{name}/versions/{version}/artifact; the store checks it against its SHA-256
// before it is sent), written atomically.
Status models_get(api::ApiClient& c, const ModelsArgs& a) {
  size_t at = a.name.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == a.name.size())
    return Status::Invalid(
        "'{}' must be NAME@ALIAS or NAME@VERSION, e.g. digits@production or digits@3", a.name);
  std::string model = a.name.substr(0, at), ref = a.name.substr(at + 1);
  std::string out = a.output.empty() ? model + "-" + ref + ".onnx" : a.output;
  DLSYS_RETURN_IF_ERROR(
      c.download("/api/v1/models/" + enc(model) + "/versions/" + enc(ref) + "/artifact", out));
  if (a.json)
    print_json({{"model", model}, {"ref", ref}, {"path", out}});
  else
    std::printf("%s@%s -> %s\n", model.c_str(), ref.c_str(), out.c_str());
  return Status::OK();
}

Status models_alias(api::ApiClient& c, const ModelsArgs& a) {
  // NAME@VERSION is how other commands name a version; alias takes them apart.
  if (size_t at = a.name.find('@'); at != std::string::npos) {
    std::string name = a.name.substr(0, at), ref = a.name.substr(at + 1);
    bool number = !ref.empty() && ref.find_first_not_of("0123456789") == std::string::npos;
    return Status::Invalid(
        "'{}': models alias takes the model name, the alias and the version apart: `dlsys models "
        "alias {} {} {}`",
        a.name, name, a.alias, number ? ref : (a.version > 0 ? std::to_string(a.version) : "N"));
  }
  std::string target = "/api/v1/models/" + enc(a.name) + "/aliases/" + enc(a.alias);
  if (a.remove) {
    DLSYS_RETURN_IF_ERROR(c.call("DELETE", target).status());
    if (!a.json) std::printf("removed alias %s of %s\n", a.alias.c_str(), a.name.c_str());
    return Status::OK();
  }
  if (a.version <= 0) {
    DLSYS_ASSIGN_OR_RETURN(json v, c.call("GET", target));
    if (a.json) {
      print_json(v);
      return Status::OK();
    }
    DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                           meta::from_json<meta::ModelVersion>(v, answer_to("GET", target)));
    std::printf("%s@%s = version %lld\n", a.name.c_str(), a.alias.c_str(),
                static_cast<long long>(mv.version));
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("PUT", target, {{"version", a.version}}));
  if (a.json) {
    print_json(r);
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(
      auto previous, json_get_optional<int64_t>(r, "previous_version", answer_to("PUT", target)));
  if (!previous)
    std::printf("%s@%s -> version %lld\n", a.name.c_str(), a.alias.c_str(),
                static_cast<long long>(a.version));
  else
    std::printf("%s@%s -> version %lld (was %lld)\n", a.name.c_str(), a.alias.c_str(),
                static_cast<long long>(a.version), static_cast<long long>(*previous));
  return Status::OK();
}

// ---- artifacts ----

struct ArtifactsArgs : ClientArgs {
  int64_t run = 0;
  std::string path, file, output;
};

// ---- tokens ----

struct TokensArgs : ClientArgs {
  std::string role, name = "token";
  int64_t id = 0;
};

}  // namespace

void add_runs(CLI::App& app, int* rc) {
  CLI::App* runs = app.add_subcommand("runs", "List, show and compare tracked runs");
  runs->require_subcommand(1);
  auto a = std::make_shared<RunsArgs>();
  CLI::App* list = runs->add_subcommand("list", "List runs, newest first");
  add_client_options(list, a.get());
  list->add_option("--experiment", a->experiment, "Experiment name or id");
  list->add_option("--filter", a->filter,
                   "e.g. \"params.lr = '0.1' and metrics.accuracy > 0.9 and status = 'FINISHED'\"");
  list->add_option("--order-by", a->order_by,
                   "e.g. 'metrics.accuracy DESC' (default start_time DESC)");
  list->add_option("--limit", a->limit, "Runs per page")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  list->add_option("--page-token", a->page_token, "The next page (printed after a full page)");
  list->callback(
      [a, rc] { *rc = with_client(*a, [&](api::ApiClient& c) { return runs_list(c, *a); }); });
  CLI::App* show = runs->add_subcommand("show", "Show a run: params, tags, metrics, artifacts");
  add_client_options(show, a.get());
  show->add_option("id", a->ids, "Run id")->required()->expected(1);
  show->callback(
      [a, rc] { *rc = with_client(*a, [&](api::ApiClient& c) { return runs_show(c, *a); }); });
  CLI::App* end = runs->add_subcommand(
      "end",
      "Mark a run as ended (a run left RUNNING by a process that stopped without ending it)");
  add_client_options(end, a.get());
  end->add_option("id", a->ids, "Run id")->required()->expected(1);
  end->add_option("--status", a->status, "finished, failed or killed")
      ->capture_default_str()
      ->check(CLI::IsMember({"finished", "failed", "killed", "FINISHED", "FAILED", "KILLED"}));
  end->callback(
      [a, rc] { *rc = with_client(*a, [&](api::ApiClient& c) { return runs_end(c, *a); }); });
  CLI::App* cmp = runs->add_subcommand(
      "compare", "Params and metrics of runs side by side ('*' marks differences)");
  add_client_options(cmp, a.get());
  cmp->add_option("ids", a->ids, "Run ids")->required()->expected(2, 100);
  cmp->callback(
      [a, rc] { *rc = with_client(*a, [&](api::ApiClient& c) { return runs_compare(c, *a); }); });
}

void add_models(CLI::App& app, int* rc) {
  CLI::App* models = app.add_subcommand("models", "The model registry: models, versions, aliases");
  models->require_subcommand(1);
  auto a = std::make_shared<ModelsArgs>();
  CLI::App* list = models->add_subcommand("list", "List registered models");
  add_client_options(list, a.get());
  list->callback(
      [a, rc] { *rc = with_client(*a, [&](api::ApiClient& c) { return models_list(c, *a); }); });
  CLI::App* reg = models->add_subcommand(
      "register", "Register a new version of NAME from a run's ONNX artifact or from a file");
  add_client_options(reg, a.get());
  reg->add_option("name", a->name, "Model name")->required();
  reg->add_option("--run", a->run, "Run whose artifact becomes the version");
  reg->add_option("--artifact", a->artifact, "Artifact path inside the run")->capture_default_str();
  reg->add_option("--file", a->file,
                  "An ONNX file to upload: the version's own file (no run), or into --run ID");
  reg->add_flag("--new-run", a->new_run, "Make a finished run to hold --file (in --experiment)");
  reg->add_option("--experiment", a->experiment, "Experiment of the run --new-run makes")
      ->capture_default_str();
  reg->add_option("--description", a->description, "Version description");
  reg->callback([a, rc] {
    *rc = with_client(*a, [&](api::ApiClient& c) { return models_register(c, *a); });
  });
  CLI::App* vers = models->add_subcommand("versions", "List the versions of a model");
  add_client_options(vers, a.get());
  vers->add_option("name", a->name, "Model name")->required();
  vers->callback([a, rc] {
    *rc = with_client(*a, [&](api::ApiClient& c) { return models_versions(c, *a); });
  });
  CLI::App* get = models->add_subcommand(
      "get", "Download a model version's ONNX file: NAME@ALIAS or NAME@VERSION");
  add_client_options(get, a.get());
  get->add_option("model", a->name, "NAME@ALIAS or NAME@VERSION, e.g. digits@production")
      ->required();
  get->add_option("-o,--output", a->output, "Where to write it (default NAME-REF.onnx)");
  get->callback(
      [a, rc] { *rc = with_client(*a, [&](api::ApiClient& c) { return models_get(c, *a); }); });
  CLI::App* al = models->add_subcommand(
      "alias", "Point ALIAS of NAME at VERSION (promote, roll back), show it, or --delete it");
  add_client_options(al, a.get());
  al->add_option("name", a->name, "Model name")->required();
  al->add_option("alias", a->alias, "Alias, e.g. production or staging")->required();
  al->add_option("version", a->version, "Version to point at (omit to show the alias)");
  al->add_flag("--delete", a->remove, "Remove the alias");
  al->callback(
      [a, rc] { *rc = with_client(*a, [&](api::ApiClient& c) { return models_alias(c, *a); }); });
}

void add_artifacts(CLI::App& app, int* rc) {
  CLI::App* arts = app.add_subcommand("artifacts", "Get, put and list a run's artifacts");
  arts->require_subcommand(1);
  auto a = std::make_shared<ArtifactsArgs>();
  CLI::App* get = arts->add_subcommand("get", "Download an artifact (checked against its SHA-256)");
  add_client_options(get, a.get());
  get->add_option("run", a->run, "Run id")->required();
  get->add_option("path", a->path, "Artifact path in the run")->required();
  get->add_option("-o,--output", a->output, "Where to write it (default: its file name)");
  get->callback([a, rc] {
    *rc = with_client(*a, [&](api::ApiClient& c) -> Status {
      std::string out = a->output;
      if (out.empty()) out = a->path.substr(a->path.rfind('/') + 1);
      DLSYS_RETURN_IF_ERROR(c.download(
          fmt::format("/api/v1/runs/{}/artifacts/{}", a->run, api::url_encode(a->path, true)),
          out));
      if (!a->json) std::printf("wrote %s\n", out.c_str());
      return Status::OK();
    });
  });
  CLI::App* put = arts->add_subcommand("put", "Upload FILE as artifact PATH of a run");
  add_client_options(put, a.get());
  put->add_option("run", a->run, "Run id")->required();
  put->add_option("path", a->path, "Artifact path in the run")->required();
  put->add_option("file", a->file, "Local file")->required()->check(CLI::ExistingFile);
  put->callback([a, rc] {
    *rc = with_client(*a, [&](api::ApiClient& c) -> Status {
      const std::string target =
          fmt::format("/api/v1/runs/{}/artifacts/{}", a->run, api::url_encode(a->path, true));
      DLSYS_ASSIGN_OR_RETURN(json r, c.upload(target, a->file));
      if (a->json) {
        print_json(r);
        return Status::OK();
      }
      const std::string what = answer_to("PUT", target);
      DLSYS_ASSIGN_OR_RETURN(int64_t size, json_get<int64_t>(r, "size", what));
      DLSYS_ASSIGN_OR_RETURN(std::string sha, json_get<std::string>(r, "sha256", what));
      DLSYS_ASSIGN_OR_RETURN(bool dedup, json_get_or<bool>(r, "deduplicated", false, what));
      std::printf("stored %s (%lld bytes, sha256:%s%s)\n", a->path.c_str(),
                  static_cast<long long>(size), sha.substr(0, 12).c_str(),
                  dedup ? ", already stored" : "");
      return Status::OK();
    });
  });
  CLI::App* list = arts->add_subcommand("list", "List a run's artifacts");
  add_client_options(list, a.get());
  list->add_option("run", a->run, "Run id")->required();
  list->callback([a, rc] {
    *rc = with_client(*a, [&](api::ApiClient& c) -> Status {
      const std::string target = fmt::format("/api/v1/runs/{}/artifacts", a->run);
      DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", target));
      if (a->json) {
        print_json(r);
        return Status::OK();
      }
      DLSYS_ASSIGN_OR_RETURN(auto artifacts,
                             records<meta::ArtifactInfo>(r, "artifacts", answer_to("GET", target)));
      std::vector<std::vector<std::string>> rows = {{"PATH", "SIZE", "SHA256"}};
      for (auto& x : artifacts) rows.push_back({x.path, std::to_string(x.size), x.sha256});
      print_table(rows);
      return Status::OK();
    });
  });
}

void add_tokens(CLI::App& app, int* rc) {
  CLI::App* tokens = app.add_subcommand("tokens", "API tokens for servers run with --auth");
  tokens->require_subcommand(1);
  auto a = std::make_shared<TokensArgs>();
  CLI::App* create =
      tokens->add_subcommand("create", "Create a token (printed once; only its hash is stored)");
  add_client_options(create, a.get());
  create->add_option("--role", a->role, "admin, editor, viewer or inference")->required();
  create->add_option("--name", a->name, "A name for the token (shown in the audit log)")
      ->capture_default_str();
  create->callback([a, rc] {
    *rc = with_client(*a, [&](api::ApiClient& c) -> Status {
      DLSYS_ASSIGN_OR_RETURN(
          json t, c.call("POST", "/api/v1/tokens", {{"name", a->name}, {"role", a->role}}));
      if (a->json) {
        print_json(t);
        return Status::OK();
      }
      DLSYS_ASSIGN_OR_RETURN(
          std::string token,
          json_get<std::string>(t, "token", answer_to("POST", "/api/v1/tokens")));
      std::printf("%s\n", token.c_str());
      return Status::OK();
    });
  });
  CLI::App* list =
      tokens->add_subcommand("list", "List tokens (names and roles, never the tokens)");
  add_client_options(list, a.get());
  list->callback([a, rc] {
    *rc = with_client(*a, [&](api::ApiClient& c) -> Status {
      DLSYS_ASSIGN_OR_RETURN(json t, c.call("GET", "/api/v1/tokens"));
      if (a->json) {
        print_json(t);
        return Status::OK();
      }
      const std::string what = answer_to("GET", "/api/v1/tokens");
      DLSYS_ASSIGN_OR_RETURN(json list, json_list(t, "tokens", what));
      std::vector<std::vector<std::string>> rows = {{"ID", "NAME", "ROLE", "CREATED", "REVOKED"}};
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string where = fmt::format("{}: tokens[{}]", what, i);
        DLSYS_ASSIGN_OR_RETURN(int64_t id, json_get<int64_t>(list[i], "id", where));
        DLSYS_ASSIGN_OR_RETURN(std::string name, json_get<std::string>(list[i], "name", where));
        DLSYS_ASSIGN_OR_RETURN(std::string role, json_get<std::string>(list[i], "role", where));
        DLSYS_ASSIGN_OR_RETURN(int64_t created,
                               json_get_or<int64_t>(list[i], "created_at", 0, where));
        DLSYS_ASSIGN_OR_RETURN(bool revoked, json_get_or<bool>(list[i], "revoked", false, where));
        rows.push_back(
            {std::to_string(id), name, role, format_time_ms(created), revoked ? "yes" : "no"});
      }
      print_table(rows);
      return Status::OK();
    });
  });
  CLI::App* revoke = tokens->add_subcommand("revoke", "Revoke a token by id");
  add_client_options(revoke, a.get());
  revoke->add_option("id", a->id, "Token id")->required();
  revoke->callback([a, rc] {
    *rc = with_client(*a, [&](api::ApiClient& c) -> Status {
      DLSYS_RETURN_IF_ERROR(c.call("DELETE", fmt::format("/api/v1/tokens/{}", a->id)).status());
      if (!a->json) std::printf("revoked token %lld\n", static_cast<long long>(a->id));
      return Status::OK();
    });
  });
}

}  // namespace dlsys::cli
