#include "api/meta_routes.h"

#include <unistd.h>

#include "api/request_util.h"

namespace dlsys::api {

namespace {

using meta::KeyValue;
using meta::MetricPoint;

Result<std::vector<KeyValue>> key_values(const json& body, const std::string& field) {
  std::vector<KeyValue> out;
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return out;
  auto value_text = [](const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
  if (it->is_object()) {
    for (auto& [k, v] : it->items()) out.push_back({k, value_text(v)});
  } else if (it->is_array()) {
    for (const json& e : *it) {
      if (!e.is_object() || !e.contains("key") || !e["key"].is_string() || !e.contains("value"))
        return Status::Invalid("each entry of '{}' must be {{\"key\": string, \"value\": …}}",
                               field);
      out.push_back({e["key"].get<std::string>(), value_text(e["value"])});
    }
  } else {
    return Status::Invalid("field '{}' must be an object or an array of {{key, value}}", field);
  }
  return out;
}

Result<std::vector<MetricPoint>> metric_points(const json& body) {
  std::vector<MetricPoint> out;
  auto it = body.find("metrics");
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_array()) return Status::Invalid("field 'metrics' must be an array");
  if (it->size() > meta::kMaxMetricsPerBatch)
    return Status::Invalid("{} metrics in one batch; the limit is {}: split the batch", it->size(),
                           meta::kMaxMetricsPerBatch);
  out.reserve(it->size());
  size_t i = 0;
  for (const json& m : *it) {
    if (!m.is_object()) return Status::Invalid("metrics[{}] must be an object", i);
    auto k = m.find("key");
    auto v = m.find("value");
    if (k == m.end() || !k->is_string())
      return Status::Invalid("metrics[{}].key must be a string", i);
    if (k->get_ref<const std::string&>().empty())
      return Status::Invalid("metrics[{}].key is empty; name the metric", i);
    if (v == m.end() || !v->is_number())
      return Status::Invalid("metrics[{}].value must be a number", i);
    MetricPoint p;
    p.key = k->get<std::string>();
    p.value = v->get<double>();
    auto s = m.find("step");
    if (s != m.end() && !s->is_null()) {
      DLSYS_ASSIGN_OR_RETURN(p.step, json_int64(*s, fmt::format("metrics[{}].step", i)));
    }
    auto t = m.find("timestamp");
    if (t != m.end() && !t->is_null()) {
      DLSYS_ASSIGN_OR_RETURN(
          p.timestamp, json_int64(*t, fmt::format("metrics[{}].timestamp (milliseconds)", i)));
    }
    out.push_back(std::move(p));
    ++i;
  }
  return out;
}

Response page_response(const meta::Page& page, const char* key) {
  json j = {{key, page.items}};
  if (!page.next_page_token.empty()) j["next_page_token"] = page.next_page_token;
  return Response::json_body(j);
}

Result<std::vector<int64_t>> id_list(const std::string& s, const std::string& what) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_int(s.substr(start, comma - start), what));
    out.push_back(v);
    start = comma + 1;
  }
  return out;
}

Response file_response(const std::string& path, const meta::ArtifactRecord& a) {
  Response r;
  r.file_path = path;
  r.content_type = "application/octet-stream";
  r.headers.push_back({"X-Content-SHA256", a.sha256});
  return r;
}

}  // namespace

void add_meta_routes(Router& router, meta::MetaStore& store, meta::ArtifactStore& objects,
                     std::function<Status(const std::string& path)> validate_model) {
  meta::MetaStore* s = &store;
  meta::ArtifactStore* obj = &objects;

  router.add("GET", "/api/v1/health", Access::kPublic, [s](Request&) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t v, s->db().schema_version());
    return Response::json_body(
        {{"status", "ok"},
         {"schema_version", v},
         {"meta", s->db().dialect() == meta::SqlDialect::kSqlite ? "sqlite" : "postgresql"}});
  });

  // ---- experiments ----
  router.add("POST", "/api/v1/experiments", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string name, string_field(b, "name", true));
    DLSYS_ASSIGN_OR_RETURN(std::string desc, string_field(b, "description", false));
    DLSYS_ASSIGN_OR_RETURN(json e, s->runs().create_experiment(name, desc, r.principal));
    return Response::json_body(e, 201);
  });
  router.add("GET", "/api/v1/experiments", Access::kRead, [s](Request& r) -> Result<Response> {
    std::string name = r.query_or("name", "");
    if (!name.empty()) {
      DLSYS_ASSIGN_OR_RETURN(json e, s->runs().get_experiment_by_name(name));
      return Response::json_body({{"experiments", json::array({e})}});
    }
    DLSYS_ASSIGN_OR_RETURN(int n, page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(meta::Page p,
                           s->runs().list_experiments(n, r.query_or("page_token", "")));
    return page_response(p, "experiments");
  });
  router.add("GET", "/api/v1/experiments/{id}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "experiment id"));
    DLSYS_ASSIGN_OR_RETURN(json e, s->runs().get_experiment(id));
    return Response::json_body(e);
  });

  // ---- runs ----
  router.add("POST", "/api/v1/runs", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    int64_t exp_id = 0;
    if (b.contains("experiment") && !b.contains("experiment_id")) {
      DLSYS_ASSIGN_OR_RETURN(std::string ename, string_field(b, "experiment", true));
      DLSYS_ASSIGN_OR_RETURN(json e, s->runs().ensure_experiment(ename, r.principal));
      exp_id = e["id"].get<int64_t>();
    } else {
      DLSYS_ASSIGN_OR_RETURN(exp_id, int_field(b, "experiment_id", true));
    }
    DLSYS_ASSIGN_OR_RETURN(std::string name, string_field(b, "name", false));
    DLSYS_ASSIGN_OR_RETURN(auto params, key_values(b, "params"));
    DLSYS_ASSIGN_OR_RETURN(auto tags, key_values(b, "tags"));
    DLSYS_ASSIGN_OR_RETURN(json run, s->runs().create_run(exp_id, name, params, tags, r.principal));
    return Response::json_body(run, 201);
  });
  auto search = [s](Request& r, const json& b) -> Result<Response> {
    meta::SearchRunsRequest q;
    std::string ids = r.query_or("experiment_ids", r.query_or("experiment_id", ""));
    if (b.contains("experiment_ids")) {
      if (!b["experiment_ids"].is_array())
        return Status::Invalid("field 'experiment_ids' must be an array of integers");
      for (auto& v : b["experiment_ids"]) {
        DLSYS_ASSIGN_OR_RETURN(int64_t id, json_int64(v, "each of 'experiment_ids'"));
        q.experiment_ids.push_back(id);
      }
    } else {
      DLSYS_ASSIGN_OR_RETURN(q.experiment_ids, id_list(ids, "experiment_ids"));
    }
    DLSYS_ASSIGN_OR_RETURN(q.filter, string_field(b, "filter", false, r.query_or("filter", "")));
    DLSYS_ASSIGN_OR_RETURN(q.order_by,
                           string_field(b, "order_by", false, r.query_or("order_by", "")));
    DLSYS_ASSIGN_OR_RETURN(q.page_token,
                           string_field(b, "page_token", false, r.query_or("page_token", "")));
    DLSYS_ASSIGN_OR_RETURN(int n, page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(int64_t n2, int_field(b, "page_size", false, n));
    q.page_size = static_cast<int>(n2);
    DLSYS_ASSIGN_OR_RETURN(meta::Page p, s->runs().search_runs(q));
    return page_response(p, "runs");
  };
  router.add("GET", "/api/v1/runs", Access::kRead,
             [search](Request& r) -> Result<Response> { return search(r, json::object()); });
  router.add("POST", "/api/v1/runs/search", Access::kRead,
             [search](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
               return search(r, b);
             });
  router.add("GET", "/api/v1/runs/{id}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
    DLSYS_ASSIGN_OR_RETURN(json run, s->runs().get_run(id));
    return Response::json_body(run);
  });
  router.add("PATCH", "/api/v1/runs/{id}", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string status, string_field(b, "status", true));
    DLSYS_ASSIGN_OR_RETURN(json run, s->runs().update_run(id, status, r.principal));
    return Response::json_body(run);
  });
  router.add(
      "POST", "/api/v1/runs/{id}/log-batch", Access::kWrite,
      [s](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
        DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
        DLSYS_ASSIGN_OR_RETURN(auto metrics, metric_points(b));
        DLSYS_ASSIGN_OR_RETURN(auto params, key_values(b, "params"));
        DLSYS_ASSIGN_OR_RETURN(auto tags, key_values(b, "tags"));
        DLSYS_RETURN_IF_ERROR(s->runs().log_batch(id, metrics, params, tags, r.principal));
        return Response::json_body(
            {{"logged",
              {{"metrics", metrics.size()}, {"params", params.size()}, {"tags", tags.size()}}}});
      },
      /*body_to_file=*/false, kBatchBodyLimit);
  router.add("GET", "/api/v1/runs/{id}/metrics/{key...}", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
               DLSYS_ASSIGN_OR_RETURN(int64_t maxp,
                                      parse_int(r.query_or("max_points", "0"), "max_points"));
               if (maxp < 0 || maxp > static_cast<int64_t>(meta::kMaxMetricPoints))
                 return Status::Invalid("max_points {} is out of range 0..{} (0: the default, {})",
                                        maxp, meta::kMaxMetricPoints,
                                        meta::kDefaultMaxMetricPoints);
               DLSYS_ASSIGN_OR_RETURN(
                   json h, s->runs().metric_history(id, r.param("key"), static_cast<int>(maxp)));
               return Response::json_body(h);
             });

  // ---- artifacts ----
  router.add(
      "PUT", "/api/v1/runs/{id}/artifacts/{path...}", Access::kWrite,
      [s, obj](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
        const std::string& path = r.param("path");
        DLSYS_RETURN_IF_ERROR(meta::check_artifact_path(path));
        DLSYS_RETURN_IF_ERROR(s->runs().get_run(id).status());
        // The body arrived as a file (HTTP) or in memory (an in-process call without one).
        std::string tmp = std::move(r.body_file);
        r.body_file.clear();
        DLSYS_ASSIGN_OR_RETURN(meta::StoredObject o,
                               tmp.empty() ? obj->put(r.body) : obj->put_file(tmp));
        DLSYS_RETURN_IF_ERROR(s->runs().record_artifact(id, {path, o.sha256, o.size}, r.principal));
        return Response::json_body({{"path", path},
                                    {"sha256", o.sha256},
                                    {"size", o.size},
                                    {"deduplicated", o.deduplicated}},
                                   201);
      },
      /*body_to_file=*/true);
  router.add("GET", "/api/v1/runs/{id}/artifacts/{path...}", Access::kRead,
             [s, obj](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
               DLSYS_ASSIGN_OR_RETURN(meta::ArtifactRecord a,
                                      s->runs().get_artifact(id, r.param("path")));
               DLSYS_ASSIGN_OR_RETURN(std::string file, obj->open_verified(a.sha256));
               return file_response(file, a);
             });
  router.add(
      "GET", "/api/v1/runs/{id}/artifacts", Access::kRead, [s](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
        DLSYS_ASSIGN_OR_RETURN(json list, s->runs().list_artifacts(id, r.query_or("prefix", "")));
        return Response::json_body({{"artifacts", list}});
      });

  // ---- model registry ----
  router.add("POST", "/api/v1/models", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string name, string_field(b, "name", true));
    DLSYS_ASSIGN_OR_RETURN(std::string desc, string_field(b, "description", false));
    DLSYS_ASSIGN_OR_RETURN(json m, s->registry().create_model(name, desc, r.principal));
    return Response::json_body(m, 201);
  });
  router.add("GET", "/api/v1/models", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int n, page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(meta::Page p, s->registry().list_models(n, r.query_or("page_token", ""),
                                                                   r.query_or("name_like", ""),
                                                                   r.query_or("order_by", "")));
    return page_response(p, "models");
  });
  router.add("GET", "/api/v1/models/{name}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json m, s->registry().get_model(r.param("name")));
    return Response::json_body(m);
  });
  router.add("POST", "/api/v1/models/{name}/versions", Access::kWrite,
             [s, obj, validate_model](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
               DLSYS_ASSIGN_OR_RETURN(int64_t run, int_field(b, "run_id", true));
               DLSYS_ASSIGN_OR_RETURN(std::string path,
                                      string_field(b, "artifact_path", false, "model.onnx"));
               DLSYS_ASSIGN_OR_RETURN(std::string desc, string_field(b, "description", false));
               if (validate_model) {
                 // The artifact must exist and be a model dlsys can load before it is a version.
                 auto a = s->runs().get_artifact(run, path);
                 if (a.ok()) {
                   DLSYS_ASSIGN_OR_RETURN(std::string file, obj->open_verified(a->sha256));
                   DLSYS_RETURN_IF_ERROR(validate_model(file).with_context(fmt::format(
                       "artifact '{}' of run {} is not a loadable ONNX model", path, run)));
                 }
               }
               DLSYS_ASSIGN_OR_RETURN(json v, s->registry().create_model_version(
                                                  r.param("name"), run, path, desc, r.principal));
               return Response::json_body(v, 201);
             });
  router.add("GET", "/api/v1/models/{name}/versions", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json v, s->registry().list_model_versions(r.param("name")));
               return Response::json_body({{"versions", v}});
             });
  router.add("GET", "/api/v1/models/{name}/versions/{version}", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_int(r.param("version"), "version"));
               DLSYS_ASSIGN_OR_RETURN(json mv, s->registry().get_model_version(r.param("name"), v));
               return Response::json_body(mv);
             });
  router.add("PATCH", "/api/v1/models/{name}/versions/{version}", Access::kWrite,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_int(r.param("version"), "version"));
               DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
               DLSYS_ASSIGN_OR_RETURN(std::string st, string_field(b, "status", true));
               DLSYS_ASSIGN_OR_RETURN(json mv, s->registry().set_model_version_status(
                                                   r.param("name"), v, st, r.principal));
               return Response::json_body(mv);
             });
  // The version's ONNX file; {version} may be a number or an alias ("production", "latest").
  router.add(
      "GET", "/api/v1/models/{name}/versions/{version}/artifact", Access::kInfer,
      [s, obj](Request& r) -> Result<Response> {
        const std::string& ver = r.param("version");
        json mv;
        if (!ver.empty() && std::isdigit(static_cast<unsigned char>(ver[0]))) {
          DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_int(ver, "version"));
          DLSYS_ASSIGN_OR_RETURN(mv, s->registry().get_model_version(r.param("name"), v));
        } else {
          DLSYS_ASSIGN_OR_RETURN(mv, s->registry().get_version_by_alias(r.param("name"), ver));
        }
        meta::ArtifactRecord a{mv["artifact_path"], mv["sha256"], mv["size"]};
        DLSYS_ASSIGN_OR_RETURN(std::string file, obj->open_verified(a.sha256));
        Response resp = file_response(file, a);
        resp.headers.push_back({"X-Model-Version", std::to_string(mv["version"].get<int64_t>())});
        return resp;
      });
  router.add("PUT", "/api/v1/models/{name}/aliases/{alias}", Access::kWrite,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
               DLSYS_ASSIGN_OR_RETURN(int64_t v, int_field(b, "version", true));
               DLSYS_ASSIGN_OR_RETURN(
                   json a,
                   s->registry().set_alias(r.param("name"), r.param("alias"), v, r.principal));
               return Response::json_body(a);
             });
  router.add("GET", "/api/v1/models/{name}/aliases/{alias}", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(
                   json mv, s->registry().get_version_by_alias(r.param("name"), r.param("alias")));
               return Response::json_body(mv);
             });
  router.add("DELETE", "/api/v1/models/{name}/aliases/{alias}", Access::kWrite,
             [s](Request& r) -> Result<Response> {
               DLSYS_RETURN_IF_ERROR(
                   s->registry().delete_alias(r.param("name"), r.param("alias"), r.principal));
               return Response::json_body({{"deleted", true}});
             });

  // ---- lineage ----
  router.add("POST", "/api/v1/lineage", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    if (!b.contains("src") || !b["src"].is_object() || !b.contains("dst") || !b["dst"].is_object())
      return Status::Invalid(
          "lineage edges are {{\"src\": {{kind, id}}, \"dst\": {{kind, id}}, "
          "\"relation\": …}}");
    DLSYS_ASSIGN_OR_RETURN(std::string sk, string_field(b["src"], "kind", true));
    DLSYS_ASSIGN_OR_RETURN(std::string si, string_field(b["src"], "id", true));
    DLSYS_ASSIGN_OR_RETURN(std::string dk, string_field(b["dst"], "kind", true));
    DLSYS_ASSIGN_OR_RETURN(std::string di, string_field(b["dst"], "id", true));
    DLSYS_ASSIGN_OR_RETURN(std::string rel, string_field(b, "relation", false, "input"));
    DLSYS_RETURN_IF_ERROR(s->lineage().add_edge(sk, si, dk, di, rel, r.principal));
    return Response::json_body({{"src", b["src"]}, {"dst", b["dst"]}, {"relation", rel}}, 201);
  });
  router.add(
      "GET", "/api/v1/lineage/{kind}/{id...}", Access::kRead, [s](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(int64_t depth, parse_int(r.query_or("depth", "10"), "depth"));
        DLSYS_ASSIGN_OR_RETURN(
            json g, s->lineage().graph(r.param("kind"), r.param("id"), static_cast<int>(depth)));
        return Response::json_body(g);
      });

  // ---- audit and tokens (admin) ----
  router.add("GET", "/api/v1/audit", Access::kAdmin, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int n, page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(meta::Page p, s->db().list_audit(n, r.query_or("page_token", "")));
    return page_response(p, "entries");
  });
  router.add("POST", "/api/v1/tokens", Access::kAdmin, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string name, string_field(b, "name", true));
    DLSYS_ASSIGN_OR_RETURN(std::string role, string_field(b, "role", true));
    DLSYS_ASSIGN_OR_RETURN(meta::Role rl, meta::parse_role(role));
    DLSYS_ASSIGN_OR_RETURN(json t, s->tokens().create_token(name, rl, r.principal));
    return Response::json_body(t, 201);
  });
  router.add("GET", "/api/v1/tokens", Access::kAdmin, [s](Request&) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json t, s->tokens().list_tokens());
    return Response::json_body({{"tokens", t}});
  });
  router.add("DELETE", "/api/v1/tokens/{id}", Access::kAdmin, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "token id"));
    DLSYS_RETURN_IF_ERROR(s->tokens().revoke_token(id, r.principal));
    return Response::json_body({{"revoked", id}});
  });
}

}  // namespace dlsys::api
