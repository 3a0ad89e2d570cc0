// `dlsys deploy`: create, list, show, update and delete deployments on a running dlsys server
// (POST/GET/PUT/DELETE /api/v1/deployments). A deployment serves MODEL@ALIAS (following the
// alias as it moves) or MODEL@VERSION under /v2/models/NAME (KServe v2).
#include <cstdio>
#include <optional>

#include "cli/client_options.h"

namespace dlsys::cli {
namespace {

using json = nlohmann::json;

struct DeployArgs : ClientArgs {
  std::string name, model;
  // Serving settings; unset ones are not sent (the server's defaults, or on update the
  // deployment's current values, apply).
  std::optional<int64_t> max_batch, max_delay_us, instances, threads, max_queue, timeout_ms,
      cache_mb, weight, min_instances, max_instances;
  std::optional<double> sample_rate;
  std::string precision;
  std::string canary, shadow;  // MODEL@VERSION
  bool no_shadow = false;
};

void add_config_options(CLI::App* c, DeployArgs* a) {
  c->add_option("--max-batch", a->max_batch, "Rows per batch (default 32)");
  c->add_option("--max-delay-us", a->max_delay_us, "How long a batch waits to fill (default 2000)");
  c->add_option("--instances", a->instances, "Model instances, each with its own threads (1)");
  c->add_option("--threads", a->threads, "Intra-op threads per instance (1)");
  c->add_option("--min-instances", a->min_instances,
                "Autoscaling: the fewest instances (with --max-instances; 1)");
  c->add_option("--max-instances", a->max_instances,
                "Autoscaling: add instances up to this many while requests queue, remove them "
                "when idle (within the machine's cores)");
  c->add_option("--precision", a->precision,
                "fp32, bf16, or int8 (MatMul/Gemm weights quantized when the version loads) "
                "(fp32)");
  c->add_option("--max-queue", a->max_queue, "Queued requests before 503 (256)");
  c->add_option("--timeout-ms", a->timeout_ms,
                "A request's deadline unless it sets parameters.timeout (1000)");
  c->add_option("--sample-rate", a->sample_rate,
                "Fraction (0..1) of successful requests recorded with inputs and outputs under "
                "DATA_DIR/samples for monitoring (0: off, the default)");
  c->add_option("--cache-mb", a->cache_mb,
                "Response cache per version, LRU by bytes: repeated inputs are answered without "
                "running (0: off, the default)");
  c->add_option("--canary", a->canary,
                "MODEL@VERSION answering --weight percent of the requests (sticky per "
                "X-Request-Key); then `dlsys deploy promote|rollback NAME`");
  c->add_option("--weight", a->weight, "The canary's share of requests in percent (10)");
  c->add_option("--shadow", a->shadow,
                "MODEL@VERSION that gets a copy of every request; its answers are compared with "
                "the served ones (agreement in `deploy show`), never returned");
}

// "digits@production" -> ("digits", "production"); "digits@3" -> ("digits", "3").
Result<std::pair<std::string, std::string>> split_model_ref(const std::string& text,
                                                            const char* flag = "--model") {
  size_t at = text.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == text.size())
    return Status::Invalid(
        "{} '{}' must be MODEL@ALIAS (follows the alias) or MODEL@VERSION, e.g. "
        "digits@production or digits@3",
        flag, text);
  return std::make_pair(text.substr(0, at), text.substr(at + 1));
}

// --canary/--shadow: MODEL@VERSION (a pinned version) as the config's {"model", "version"}.
Result<json> target_of(const std::string& text, const char* flag) {
  DLSYS_ASSIGN_OR_RETURN(auto mr, split_model_ref(text, flag));
  const std::string& v = mr.second;
  if (v.empty() || v.size() > 12 || v.find_first_not_of("0123456789") != std::string::npos)
    return Status::Invalid(
        "{} '{}' must name a version number (MODEL@VERSION, e.g. digits@3), "
        "not an alias",
        flag, text);
  return json{{"model", mr.first}, {"version", std::stoll(v)}};
}

Result<json> config_of(const DeployArgs& a, json base) {
  auto put = [&](const char* k, const std::optional<int64_t>& v) {
    if (v) base[k] = *v;
  };
  put("max_batch", a.max_batch);
  put("max_delay_us", a.max_delay_us);
  put("instances", a.instances);
  put("threads", a.threads);
  put("max_queue", a.max_queue);
  put("timeout_ms", a.timeout_ms);
  put("cache_mb", a.cache_mb);
  if (a.sample_rate) base["sample_rate"] = *a.sample_rate;
  put("min_instances", a.min_instances);
  put("max_instances", a.max_instances);
  if (a.max_instances) base.erase("instances");
  if (!a.precision.empty()) base["precision"] = a.precision;
  if (!a.canary.empty()) {
    DLSYS_ASSIGN_OR_RETURN(json t, target_of(a.canary, "--canary"));
    t["weight"] = a.weight.value_or(10);
    base["canary"] = t;
  } else if (a.weight) {
    if (!base.contains("canary"))
      return Status::Invalid("--weight needs a canary: add --canary MODEL@VERSION");
    base["canary"]["weight"] = *a.weight;
  }
  if (!a.shadow.empty()) {
    DLSYS_ASSIGN_OR_RETURN(base["shadow"], target_of(a.shadow, "--shadow"));
  }
  if (a.no_shadow) base.erase("shadow");
  return base;
}

void print_deployment_text(const json& d) {
  const json& s = d.value("status", json::object());
  std::printf("%s  %s@%s", d.value("name", "").c_str(), d.value("model", "").c_str(),
              d.value("ref", "").c_str());
  if (s.contains("version") && s["version"].is_number_integer())
    std::printf(" -> version %lld", static_cast<long long>(s["version"].get<int64_t>()));
  std::printf("  %s\n", s.value("state", "unknown").c_str());
  if (s.contains("last_error") && s["last_error"].is_string())
    std::printf("  last error: %s\n", s["last_error"].get<std::string>().c_str());
  std::printf("  infer: POST /v2/models/%s/infer\n", d.value("name", "").c_str());
  if (s.contains("config")) std::printf("  config: %s\n", s["config"].dump().c_str());
  if (s.contains("stats")) std::printf("  stats:  %s\n", s["stats"].dump().c_str());
  if (s.contains("memory_bytes") && s["memory_bytes"].is_number())
    std::printf("  memory: %.1f MiB, loaded in %.2f s\n",
                s["memory_bytes"].get<double>() / (1 << 20), s.value("load_seconds", 0.0));
  if (s.contains("cache")) std::printf("  cache:  %s\n", s["cache"].dump().c_str());
  if (s.contains("canary") && s["canary"].is_object()) {
    const json& c = s["canary"];
    std::printf("  canary: %s@%lld, %lld%% of requests; stats %s\n", c.value("model", "").c_str(),
                static_cast<long long>(c.value("version", int64_t{0})),
                static_cast<long long>(c.value("weight", int64_t{0})),
                c.value("stats", json::object()).dump().c_str());
    std::printf(
        "          promote: dlsys deploy promote %s   roll back: dlsys deploy rollback %s\n",
        d.value("name", "").c_str(), d.value("name", "").c_str());
  }
  if (s.contains("shadow") && s["shadow"].is_object()) {
    const json& sh = s["shadow"];
    const json& cmp = sh.value("comparison", json::object());
    std::string agreement = cmp.contains("agreement") && cmp["agreement"].is_number()
                                ? fmt::format("{:.1f}%", cmp["agreement"].get<double>() * 100)
                                : "n/a";
    std::printf("  shadow: %s@%lld, agreement %s (%s)\n", sh.value("model", "").c_str(),
                static_cast<long long>(sh.value("version", int64_t{0})), agreement.c_str(),
                cmp.dump().c_str());
  }
}

// The answer for a deployment: JSON with --json, else the summary.
Status print_deployment(const json& d, const DeployArgs& a) {
  if (a.json)
    print_json(d);
  else
    print_deployment_text(d);
  return Status::OK();
}

Status deploy_create(api::ApiClient& c, const DeployArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(auto mr, split_model_ref(a.model));
  json body = {
      {"name", a.name}, {"model", mr.first}, {"ref", mr.second}, {"config", json::object()}};
  DLSYS_ASSIGN_OR_RETURN(body["config"], config_of(a, json::object()));
  DLSYS_ASSIGN_OR_RETURN(json d, c.call("POST", "/api/v1/deployments", body));
  return print_deployment(d, a);
}

Status deploy_update(api::ApiClient& c, const DeployArgs& a) {
  std::string target = "/api/v1/deployments/" + enc(a.name);
  DLSYS_ASSIGN_OR_RETURN(json cur, c.call("GET", target));
  std::string what = answer_to("GET", target);
  DLSYS_ASSIGN_OR_RETURN(std::string model, json_get<std::string>(cur, "model", what));
  DLSYS_ASSIGN_OR_RETURN(std::string ref, json_get<std::string>(cur, "ref", what));
  DLSYS_ASSIGN_OR_RETURN(json config, json_get<json>(cur, "config", what));
  if (!a.model.empty()) {
    DLSYS_ASSIGN_OR_RETURN(auto mr, split_model_ref(a.model));
    model = mr.first;
    ref = mr.second;
  }
  DLSYS_ASSIGN_OR_RETURN(json new_config, config_of(a, config));
  json body = {{"model", model}, {"ref", ref}, {"config", new_config}};
  DLSYS_ASSIGN_OR_RETURN(json d, c.call("PUT", target, body));
  return print_deployment(d, a);
}

Status deploy_list(api::ApiClient& c, const DeployArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", "/api/v1/deployments"));
  if (a.json) {
    print_json(r);
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(json list,
                         json_list(r, "deployments", answer_to("GET", "/api/v1/deployments")));
  if (list.empty()) {
    std::printf(
        "no deployments; create one with `dlsys deploy create NAME --model "
        "MODEL@production`\n");
    return Status::OK();
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "MODEL", "VERSION", "STATE", "QUEUE", "DONE", "REJECTED", "EXPIRED"}};
  for (const auto& d : list) {
    const json& s = d.value("status", json::object());
    const json& st = s.value("stats", json::object());
    auto num = [](const json& j, const char* k) {
      return j.contains(k) && j[k].is_number_integer() ? std::to_string(j[k].get<int64_t>())
                                                       : std::string("-");
    };
    rows.push_back({d.value("name", ""), d.value("model", "") + "@" + d.value("ref", ""),
                    num(s, "version"), s.value("state", "-"), num(st, "queue_depth"),
                    num(st, "done"), num(st, "rejected"), num(st, "expired")});
  }
  print_table(rows);
  return Status::OK();
}

Status deploy_show(api::ApiClient& c, const DeployArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json d, c.call("GET", "/api/v1/deployments/" + enc(a.name)));
  return print_deployment(d, a);
}

Status deploy_promote(api::ApiClient& c, const DeployArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json d, c.call("POST", "/api/v1/deployments/" + enc(a.name) + "/promote"));
  return print_deployment(d, a);
}

Status deploy_rollback(api::ApiClient& c, const DeployArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json d,
                         c.call("POST", "/api/v1/deployments/" + enc(a.name) + "/rollback"));
  return print_deployment(d, a);
}

Status deploy_delete(api::ApiClient& c, const DeployArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json d, c.call("DELETE", "/api/v1/deployments/" + enc(a.name)));
  if (a.json)
    print_json(d);
  else
    std::printf("deleted deployment %s (drained, unloaded)\n", a.name.c_str());
  return Status::OK();
}

}  // namespace

void add_deploy(CLI::App& app, int* rc) {
  CLI::App* dep = app.add_subcommand(
      "deploy", "Serve registered models: deployments on a running `dlsys server` (KServe v2)");
  dep->require_subcommand(1);
  auto a = std::make_shared<DeployArgs>();
  auto bind = [&](CLI::App* c, Status (*fn)(api::ApiClient&, const DeployArgs&)) {
    add_client_options(c, a.get());
    c->callback([a, rc, fn] {
      *rc = with_client(
          *a, [&](api::ApiClient& cl) { return fn(cl, *a); }, /*server_only=*/true);
    });
  };
  CLI::App* create = dep->add_subcommand(
      "create", "Deploy MODEL@ALIAS (follows the alias) or MODEL@VERSION as NAME");
  create->add_option("name", a->name, "Deployment name (the model name in /v2/models/NAME)")
      ->required();
  create->add_option("--model", a->model, "MODEL@ALIAS or MODEL@VERSION")->required();
  add_config_options(create, a.get());
  bind(create, deploy_create);
  CLI::App* update = dep->add_subcommand(
      "update", "Change what NAME serves or how (the new version loads before the switch)");
  update->add_option("name", a->name, "Deployment name")->required();
  update->add_option("--model", a->model, "MODEL@ALIAS or MODEL@VERSION");
  add_config_options(update, a.get());
  update->add_flag("--no-shadow", a->no_shadow, "Stop the shadow traffic and unload the shadow");
  bind(update, deploy_update);
  CLI::App* list = dep->add_subcommand("list", "List deployments with their state and counters");
  bind(list, deploy_list);
  CLI::App* show = dep->add_subcommand("show", "Show a deployment: version, config, statistics");
  show->add_option("name", a->name, "Deployment name")->required();
  bind(show, deploy_show);
  CLI::App* promote = dep->add_subcommand(
      "promote",
      "Make NAME's canary its primary: moves the alias it follows to the canary's version (or "
      "pins the deployment to it); nothing reloads");
  promote->add_option("name", a->name, "Deployment name")->required();
  bind(promote, deploy_promote);
  CLI::App* rollback =
      dep->add_subcommand("rollback", "Drop NAME's canary: all traffic to the primary again");
  rollback->add_option("name", a->name, "Deployment name")->required();
  bind(rollback, deploy_rollback);
  CLI::App* del = dep->add_subcommand("delete", "Stop serving NAME (drains queued requests)");
  del->add_option("name", a->name, "Deployment name")->required();
  bind(del, deploy_delete);
}

}  // namespace dlsys::cli
