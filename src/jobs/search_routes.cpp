#include "jobs/search_routes.h"

#include <memory>

#include "api/meta_routes.h"
#include "api/request_util.h"
#include "jobs/search_policy.h"
#include "jobs/search_spec.h"

namespace dlsys::jobs {
namespace {

using api::Access;
using api::Request;
using api::Response;
using nlohmann::json;

// The trials whose jobs a submission checks before it is stored (each draws other values).
constexpr size_t kTrialsChecked = 20;

Result<int64_t> search_id(const Request& r) {
  DLSYS_ASSIGN_OR_RETURN(int64_t id, api::parse_int(r.param("id"), "search id"));
  if (id < 1) return Status::Invalid("search id {} must be 1 or more", id);
  return id;
}

}  // namespace

void add_search_routes(api::Router& router, meta::MetaStore& store, SearchRoutesOptions options) {
  auto o = std::make_shared<const SearchRoutesOptions>(std::move(options));
  meta::MetaStore* s = &store;
  router.add("POST", "/api/v1/searches", Access::kWrite, [s, o](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json body, api::body_object(r));
    DLSYS_ASSIGN_OR_RETURN(SearchSpec spec, search_spec_from_json(body, "the search spec"));
    if (!spec.trial.owner.empty() && spec.trial.owner != r.principal.name)
      return Status::PermissionDenied(
          "'trial.owner' is '{}' but you are '{}': a search's trials are its owner's (leave "
          "owner out)",
          spec.trial.owner, r.principal.name);
    const std::vector<json> params = trial_params(spec);
    if (params.empty()) return Status::Invalid("the search spec draws no trials");
    const int64_t epochs = rung_epochs(spec).front();
    if (o->validate)
      for (size_t i = 0; i < params.size() && i < kTrialsChecked; ++i)
        DLSYS_RETURN_IF_ERROR(
            o->validate(trial_job(spec, spec.name, static_cast<int64_t>(i), params[i], epochs),
                        spec.asha)
                .with_context(fmt::format("trial {} ({})", i, params[i].dump())));
    DLSYS_ASSIGN_OR_RETURN(meta::Search created,
                           s->searches().create(spec.name, to_json(spec), r.principal));
    if (o->wake) o->wake();
    json out = created;
    out["trials_total"] = params.size();
    out["rungs"] = rung_epochs(spec);
    return Response::json_body(out, 201);
  });
  router.add("GET", "/api/v1/searches", Access::kRead, [s](Request& r) -> Result<Response> {
    std::string state = r.query_or("state", "");
    for (char& c : state) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    DLSYS_ASSIGN_OR_RETURN(int n, api::page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(auto p, s->searches().list(state, n, r.query_or("page_token", "")));
    return api::page_response(p, "searches");
  });
  router.add("GET", "/api/v1/searches/{id}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, search_id(r));
    DLSYS_ASSIGN_OR_RETURN(meta::Search x, s->searches().get(id));
    DLSYS_ASSIGN_OR_RETURN(auto trials, s->searches().trials(id));
    json out = x;
    auto spec = search_spec_from_json(x.spec, fmt::format("search {}", id));
    std::vector<int64_t> rungs;
    if (spec.ok()) {
      rungs = rung_epochs(*spec);
      out["rungs"] = rungs;
      out["trials_total"] = trial_params(*spec).size();
      out["metric"] = spec->metric;
      out["mode"] = spec->maximize ? "max" : "min";
    }
    json list = json::array();
    for (const meta::SearchTrial& t : trials) {
      json j = t;
      if (auto job = s->jobs().get(t.job_id); job.ok()) {
        j["job_state"] = job->state;
        j["run_id"] = job->run_id;
        j["core_seconds"] = static_cast<double>(job->core_ms) / 1000.0;
      }
      if (t.rung < static_cast<int64_t>(rungs.size())) j["epochs"] = rungs[t.rung];
      list.push_back(std::move(j));
    }
    out["trials"] = std::move(list);
    return Response::json_body(out);
  });
  router.add("POST", "/api/v1/searches/{id}/cancel", Access::kWrite,
             [s, o](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t id, search_id(r));
               DLSYS_ASSIGN_OR_RETURN(meta::Search x, s->searches().cancel(id, r.principal));
               if (o->wake) o->wake();
               return Response::json_body(x);
             });
}

}  // namespace dlsys::jobs
