#include "flow/pipeline_routes.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "api/meta_routes.h"
#include "api/request_util.h"
#include "core/sha256.h"
#include "core/utf8.h"

namespace dlsys::flow {
namespace {

using api::Access;
using api::Request;
using api::Response;
using nlohmann::json;

// The most of one job's log a run's logs carry (its end: where a failure shows).
constexpr int64_t kLogTailBytes = 64 << 10;
// The most log text one answer carries (a fanned-out step has up to 1,000 jobs).
constexpr size_t kMaxLogsBytes = 8 << 20;

Result<int64_t> run_id(const Request& r) {
  DLSYS_ASSIGN_OR_RETURN(int64_t id, api::parse_int(r.param("id"), "pipeline run id"));
  if (id < 1) return Status::Invalid("pipeline run id {} must be 1 or more", id);
  return id;
}

// Run `id` of pipeline {name} ("-": of any pipeline).
Result<meta::PipelineRun> run_of(meta::MetaStore& s, const Request& r) {
  DLSYS_ASSIGN_OR_RETURN(int64_t id, run_id(r));
  DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun run, s.pipelines().get_run(id));
  const std::string name = r.param("name");
  if (name != "-" && name != run.pipeline)
    return Status::NotFound("pipeline run {} is a run of '{}', not of '{}'", id, run.pipeline,
                            name.substr(0, 80));
  return run;
}

json spec_json(const PipelineSpec& spec) {
  json steps = json::array();
  for (const std::string& name : spec.order) {
    const StepSpec& st = *spec.step(name);
    steps.push_back({{"name", st.name},
                     {"kind", st.kind},
                     {"depends_on", st.depends_on},
                     {"fan_out", !st.for_each.is_null()},
                     {"retries", st.retries},
                     {"timeout_seconds", st.timeout_seconds},
                     {"cache", st.cache}});
  }
  json triggers = json::array();
  for (const TriggerSpec& t : spec.triggers) {
    json j = {{"kind", t.kind_name()}, {"value", t.value}};
    if (!t.param.empty()) j["param"] = t.param;
    triggers.push_back(std::move(j));
  }
  return {{"description", spec.description},
          {"params", spec.params},
          {"steps", steps},
          {"triggers", triggers}};
}

// The last kLogTailBytes of a file, as printable UTF-8 ("" when there is none).
std::string log_tail(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return "";
  f.seekg(0, std::ios::end);
  const int64_t size = f.tellg();
  const int64_t from = std::max<int64_t>(0, size - kLogTailBytes);
  f.seekg(from);
  std::string buf(static_cast<size_t>(size - from), '\0');
  f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
  buf.resize(static_cast<size_t>(f.gcount()));
  return printable_utf8(buf);
}

// PermissionDenied when `spec` has a step that acts as the server and `who` is not an admin
// (with `need_admin`).
Status check_server_steps(const PipelineSpec& spec, const meta::Principal& who, bool need_admin,
                          const char* what) {
  if (!need_admin || who.role == meta::Role::kAdmin) return Status::OK();
  for (const StepSpec& st : spec.steps)
    if (st.kind == "command" || st.kind == "data.push" || st.kind == "notify")
      return Status::PermissionDenied(
          "step '{}' is a {} step, which runs as the server itself (its programs, files or "
          "network): only an admin may {} pipeline '{}'",
          st.name, st.kind, what, spec.name);
  return Status::OK();
}

}  // namespace

void add_pipeline_routes(api::Router& router, PipelineService& service, meta::MetaStore& store,
                         PipelineRoutesOptions options) {
  auto o = std::make_shared<const PipelineRoutesOptions>(std::move(options));
  meta::MetaStore* s = &store;
  PipelineService* svc = &service;
  router.add("POST", "/api/v1/pipelines", Access::kWrite, [s, o](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json body, api::body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string text, api::string_field(body, "spec", true));
    DLSYS_ASSIGN_OR_RETURN(std::string file, api::string_field(body, "file", false, "spec.yaml"));
    DLSYS_ASSIGN_OR_RETURN(PipelineSpec spec, parse_pipeline_spec(text, file));
    DLSYS_RETURN_IF_ERROR(
        check_server_steps(spec, r.principal, o->server_steps_need_admin, "create"));
    const bool existed = s->pipelines().get_pipeline(spec.name).ok();
    DLSYS_ASSIGN_OR_RETURN(meta::Pipeline p,
                           s->pipelines().put_pipeline(spec.name, text, r.principal));
    json out = p;
    out.update(spec_json(spec));
    return Response::json_body(out, existed ? 200 : 201);
  });
  router.add("GET", "/api/v1/pipelines", Access::kRead, [s](Request&) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(auto all, s->pipelines().list_pipelines());
    json list = json::array();
    for (const meta::Pipeline& p : all) {
      json j = p;
      j.erase("spec_text");
      auto last = s->pipelines().list_runs(p.name, "", 1, "");
      j["last_run"] = last.ok() && !last->items.empty() ? json(last->items[0]) : json();
      list.push_back(std::move(j));
    }
    return Response::json_body({{"pipelines", list}});
  });
  router.add("GET", "/api/v1/pipelines/{name}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(meta::Pipeline p, s->pipelines().get_pipeline(r.param("name")));
    json out = p;
    auto spec = parse_pipeline_spec(p.spec_text, p.name + ".yaml");
    if (spec.ok()) out.update(spec_json(*spec));
    return Response::json_body(out);
  });
  router.add(
      "POST", "/api/v1/pipelines/{name}/runs", Access::kWrite,
      [s, svc, o](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(json body, api::body_object(r));
        json params = body.value("params", json::object());
        if (!params.is_object())
          return Status::Invalid("'params' must be an object of NAME: VALUE");
        if (body.contains("no_cache") && !body["no_cache"].is_boolean())
          return Status::Invalid("'no_cache' must be true or false, got {}",
                                 body["no_cache"].dump().substr(0, 40));
        const bool no_cache = body.value("no_cache", false);
        DLSYS_ASSIGN_OR_RETURN(std::string event, api::string_field(body, "event_id", false));
        // A run started here is "manual"; triggers start theirs in the server.
        const std::string trigger = "manual";
        if (o->server_steps_need_admin && r.principal.role != meta::Role::kAdmin) {
          DLSYS_ASSIGN_OR_RETURN(meta::Pipeline p, s->pipelines().get_pipeline(r.param("name")));
          DLSYS_ASSIGN_OR_RETURN(PipelineSpec spec,
                                 parse_pipeline_spec(p.spec_text, p.name + ".yaml"));
          DLSYS_RETURN_IF_ERROR(check_server_steps(spec, r.principal, true, "run"));
        }
        bool created = false;
        DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun run,
                               svc->start_run(r.param("name"), params, trigger, event, no_cache,
                                              r.principal, &created));
        json out = run;
        out["created"] = created;
        return Response::json_body(out, created ? 201 : 200);
      });
  // Monitoring's webhook: {"alert": NAME, "id": EVENT} starts a run through the pipeline's alert
  // trigger, once per id (a body without one is identified by its content).
  router.add("POST", "/api/v1/pipelines/{name}/alerts", Access::kWrite,
             [svc](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json body, api::body_object(r));
               DLSYS_ASSIGN_OR_RETURN(std::string alert, api::string_field(body, "alert", true));
               DLSYS_ASSIGN_OR_RETURN(std::string id, api::string_field(body, "id", false));
               if (id.empty()) id = sha256_hex(body.dump());
               bool created = false;
               DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun run,
                                      svc->fire_alert(r.param("name"), alert, id, &created));
               json out = run;
               out["created"] = created;
               return Response::json_body(out, created ? 201 : 200);
             });
  router.add(
      "GET", "/api/v1/pipelines/{name}/runs", Access::kRead, [s](Request& r) -> Result<Response> {
        std::string state = r.query_or("state", "");
        for (char& c : state) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        const std::string name = r.param("name");
        if (name != "-") DLSYS_RETURN_IF_ERROR(s->pipelines().get_pipeline(name).status());
        DLSYS_ASSIGN_OR_RETURN(int n, api::page_size_of(r));
        DLSYS_ASSIGN_OR_RETURN(auto p, s->pipelines().list_runs(name == "-" ? "" : name, state, n,
                                                                r.query_or("page_token", "")));
        return api::page_response(p, "runs");
      });
  router.add("GET", "/api/v1/pipelines/{name}/runs/{id}", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun run, run_of(*s, r));
               DLSYS_ASSIGN_OR_RETURN(auto steps, s->pipelines().steps(run.id));
               json out = run;
               // The steps in the spec's run order, with the ones not started yet.
               json list = json::array();
               auto spec = parse_pipeline_spec(run.spec_text, run.pipeline + ".yaml");
               std::vector<std::string> order;
               if (spec.ok()) order = spec->order;
               for (const meta::StepRun& st : steps)
                 if (std::find(order.begin(), order.end(), st.step) == order.end())
                   order.push_back(st.step);
               for (const std::string& name : order) {
                 bool any = false;
                 for (const meta::StepRun& st : steps)
                   if (st.step == name) {
                     json j = st;
                     if (spec.ok() && spec->step(name)) j["kind"] = spec->step(name)->kind;
                     list.push_back(std::move(j));
                     any = true;
                   }
                 if (!any)
                   list.push_back({{"step", name},
                                   {"kind", spec.ok() ? spec->step(name)->kind : ""},
                                   {"state", "WAITING"}});
               }
               out["steps"] = std::move(list);
               if (r.query_or("spec", "0") == "1") out["spec_text"] = run.spec_text;
               return Response::json_body(out);
             });
  router.add("GET", "/api/v1/pipelines/{name}/runs/{id}/logs", Access::kRead,
             [s, o](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun run, run_of(*s, r));
               DLSYS_ASSIGN_OR_RETURN(auto steps, s->pipelines().steps(run.id));
               std::sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) {
                 return std::tie(a.started_at, a.step, a.item) <
                        std::tie(b.started_at, b.step, b.item);
               });
               json list = json::array();
               size_t log_bytes = 0;  // all the logs of one answer: at most kMaxLogsBytes
               for (const meta::StepRun& st : steps) {
                 json j = {{"step", st.step},
                           {"item", st.item},
                           {"state", st.state},
                           {"job_id", st.job_id},
                           {"cached", st.cached},
                           {"end_reason", st.end_reason},
                           {"started_at", st.started_at},
                           {"ended_at", st.ended_at}};
                 if (st.job_id > 0 && !o->job_dir.empty() && log_bytes < kMaxLogsBytes) {
                   std::string log = log_tail(fmt::format("{}/{}/log", o->job_dir, st.job_id));
                   log_bytes += log.size();
                   j["log"] = std::move(log);
                 } else if (st.job_id > 0) {
                   j["log"] = fmt::format("(not shown: `dlsys jobs logs {}` prints it)", st.job_id);
                 }
                 list.push_back(std::move(j));
               }
               return Response::json_body({{"run", run}, {"steps", list}});
             });
  router.add("POST", "/api/v1/pipelines/{name}/runs/{id}/cancel", Access::kWrite,
             [s, svc](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun run, run_of(*s, r));
               DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun out,
                                      s->pipelines().request_cancel(run.id, r.principal));
               svc->wake();
               return Response::json_body(out);
             });
  router.add("POST", "/api/v1/pipelines/{name}/runs/{id}/retry", Access::kWrite,
             [s, svc](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun run, run_of(*s, r));
               DLSYS_ASSIGN_OR_RETURN(meta::PipelineRun out,
                                      s->pipelines().retry_run(run.id, r.principal));
               svc->wake();
               return Response::json_body(out);
             });
}

}  // namespace dlsys::flow
