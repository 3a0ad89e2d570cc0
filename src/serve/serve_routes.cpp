#include "serve/serve_routes.h"

#include "api/request_util.h"

namespace dlsys::serve {
namespace {

using api::Access;
using HttpRequest = api::Request;
using api::Response;

// The protocol's error body is {"error": "<message>"}; 503s say when to retry.
Response v2_error(const Status& st) {
  Response r = Response::json_body({{"error", st.message()}}, api::http_status_of(st.code()));
  if (r.status == 503) r.headers.push_back({"Retry-After", "1"});
  return r;
}

Result<int64_t> version_param(const HttpRequest& r) {
  auto it = r.path_params.find("version");
  if (it == r.path_params.end()) return int64_t{0};
  DLSYS_ASSIGN_OR_RETURN(int64_t v, api::parse_int(it->second, "model version"));
  if (v < 1) return Status::Invalid("model version {} must be 1 or more", v);
  return v;
}

json tensor_specs_json(const std::vector<TensorSpec>& specs) {
  json out = json::array();
  for (const auto& s : specs)
    out.push_back({{"name", s.name}, {"datatype", v2_datatype(s.dtype)}, {"shape", s.shape}});
  return out;
}

// GET /v2/models/{name}: the model's tensors, then the derived outputs it offers; parameters
// name the derived outputs, the task and classes, and the features the column form takes.
json model_metadata_json(const std::string& name, const ServedVersion& v) {
  const V2ModelExtras& x = *v.extras;
  json outputs = tensor_specs_json(v.outputs);
  json params = {{"model", v.model}};
  if (!x.derived.empty()) {
    json names = json::array();
    for (const auto& d : x.derived) {
      outputs.push_back({{"name", d.name}, {"datatype", d.datatype}, {"shape", d.shape}});
      names.push_back(d.name);
    }
    params["derived_outputs"] = names;
  }
  if (!x.metadata.task.empty()) params["task"] = x.metadata.task;
  if (!x.metadata.class_names.empty()) params["class_names"] = x.metadata.class_names;
  if (!x.features.empty()) {
    json features = json::array();
    for (const auto& f : x.features) {
      json j = {{"name", f.name}, {"datatype", f.categorical ? "BYTES" : "FP32"}};
      if (f.categorical) {
        json cats = json::array();
        for (const auto& [cat, code] : x.metadata.vocabularies.at(f.name)) cats.push_back(cat);
        j["categories"] = std::move(cats);
      }
      features.push_back(std::move(j));
    }
    params["features"] = std::move(features);
  }
  return {{"name", name},
          {"versions", {std::to_string(v.version)}},
          {"platform", "dlsys_onnx"},
          {"parameters", std::move(params)},
          {"inputs", tensor_specs_json(v.inputs)},
          {"outputs", std::move(outputs)}};
}

// Parses `r` against the version chosen for it (the canary for its share, by X-Request-Key) and
// queues it; the answer goes to `reply`.
void infer_now(ModelServer* server, HttpRequest& r, const api::Reply& reply, int64_t version,
               const std::string& routing_key) {
  auto v = server->find(r.param("name"), version, &routing_key);
  if (!v.ok()) return reply(v2_error(v.status()));
  auto jlen =
      parse_inference_header_length(r.header("inference-header-content-length"), r.body.size());
  if (!jlen.ok()) return reply(v2_error(jlen.status()));
  auto req = std::make_shared<V2InferRequest>();
  auto parsed =
      parse_v2_infer_request(r.body, *jlen, (*v)->inputs, (*v)->outputs, {}, (*v)->extras.get());
  if (!parsed.ok()) return reply(v2_error(parsed.status()));
  *req = std::move(*parsed);
  req->received = r.received;
  req->answer_delay_us = r.answer_delay_us;
  // What the answer needs, by value: the callback must not keep the version alive.
  // (The version that answers has the same outputs: ModelServer::infer checks.)
  std::string name = r.param("name");
  auto outputs = std::make_shared<std::vector<TensorSpec>>((*v)->outputs);
  std::shared_ptr<const V2ModelExtras> extras = (*v)->extras;
  Status st = server->infer(
      *v, *req,
      [reply, req, name, outputs, extras](int64_t version, Result<std::vector<Tensor>> out) {
        if (!out.ok()) return reply(v2_error(out.status()));
        // Derived outputs come from this request's rows of the batch's output (and from a
        // cached answer alike: the cache holds the model's outputs, not the encoding).
        std::vector<V2ExtraOutput> derived;
        if (std::vector<std::string> names = req->derived_outputs(); !names.empty()) {
          auto d = v2_derived_outputs(*extras, names, *out);
          if (!d.ok()) return reply(v2_error(d.status()));
          derived = std::move(*d);
        }
        V2EncodedResponse e =
            encode_v2_infer_response(name, std::to_string(version), *req, *outputs, *out, derived);
        Response resp;
        resp.body = std::move(e.body);
        if (e.json_length) {
          resp.content_type = "application/octet-stream";
          resp.headers.push_back(
              {"Inference-Header-Content-Length", std::to_string(*e.json_length)});
        }
        reply(std::move(resp));
      });
  if (!st.ok()) reply(v2_error(st));
}

void add_v2_model_routes(api::Router& router, ModelServer* server, const std::string& prefix) {
  router.add("GET", prefix, Access::kInfer, [server](HttpRequest& r) -> Result<Response> {
    auto version = version_param(r);
    if (!version.ok()) return v2_error(version.status());
    (void)server->when_loaded(r.param("name"), [] {});  // an evicted deployment starts loading
    auto v = server->find(r.param("name"), *version);
    if (!v.ok()) return v2_error(v.status());
    return Response::json_body(model_metadata_json(r.param("name"), **v));
  });
  router.add("GET", prefix + "/ready", Access::kInfer,
             [server](HttpRequest& r) -> Result<Response> {
               auto version = version_param(r);
               if (!version.ok()) return v2_error(version.status());
               (void)server->when_loaded(r.param("name"), [] {});
               auto v = server->find(r.param("name"), *version);
               if (!v.ok()) return v2_error(v.status());
               return Response::json_body({{"name", r.param("name")}, {"ready", true}});
             });
  router.add_async(
      "POST", prefix + "/infer", Access::kInfer,
      [server](HttpRequest& r, api::Reply reply) {
        auto version = version_param(r);
        if (!version.ok()) return reply(v2_error(version.status()));
        // An evicted deployment is loaded again first (a cold start); `r` stays valid until
        // reply() is called, so the request continues when the load ends.
        auto go = [server, &r, reply, version = *version] {
          std::string key = r.header("x-request-key");
          infer_now(server, r, reply, version, key);
        };
        if (server->when_loaded(r.param("name"), go)) return;
        go();
      },
      api::kLargeBodyLimit, /*json_body=*/false);
}

Result<meta::Deployment> deployment_from_body(const HttpRequest& r, const std::string& name) {
  DLSYS_ASSIGN_OR_RETURN(json b, api::body_object(r));
  meta::Deployment d;
  d.name = name;
  if (d.name.empty()) {
    DLSYS_ASSIGN_OR_RETURN(d.name, api::string_field(b, "name", true));
  }
  DLSYS_ASSIGN_OR_RETURN(d.model, api::string_field(b, "model", true));
  DLSYS_ASSIGN_OR_RETURN(d.ref, api::string_field(b, "ref", false, "production"));
  d.config = b.contains("config") ? b["config"] : json::object();
  // Checked before it is stored, so the store never holds a configuration the server refuses.
  DLSYS_RETURN_IF_ERROR(parse_deployment_config(d.config).status());
  return d;
}

}  // namespace

void add_serve_routes(api::Router& router, ModelServer& server, meta::MetaStore& store) {
  ModelServer* s = &server;
  meta::DeploymentStore* deps = &store.deployments();

  router.add("GET", "/v2", Access::kInfer, [](HttpRequest&) -> Result<Response> {
    return Response::json_body(
        {{"name", "dlsys"}, {"version", "0.1"}, {"extensions", {"binary_tensor_data"}}});
  });
  router.add("GET", "/v2/health/live", Access::kPublic, [](HttpRequest&) -> Result<Response> {
    return Response::json_body({{"live", true}});
  });
  router.add("GET", "/v2/health/ready", Access::kPublic, [s](HttpRequest&) -> Result<Response> {
    bool ready = s->all_ready();
    return Response::json_body({{"ready", ready}}, ready ? 200 : 503);
  });
  add_v2_model_routes(router, s, "/v2/models/{name}");
  add_v2_model_routes(router, s, "/v2/models/{name}/versions/{version}");

  router.add("GET", "/api/v1/deployments", Access::kRead,
             [s, deps](HttpRequest&) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(std::vector<meta::Deployment> all, deps->list());
               json out = json::array();
               for (const auto& d : all) {
                 json j = d;
                 j["status"] = s->status(d.name);
                 out.push_back(std::move(j));
               }
               return Response::json_body({{"deployments", out}});
             });
  router.add("POST", "/api/v1/deployments", Access::kWrite,
             [s, deps](HttpRequest& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::Deployment d, deployment_from_body(r, ""));
               DLSYS_ASSIGN_OR_RETURN(meta::Deployment stored, deps->create(d, r.principal));
               Status st = s->apply(stored);
               if (!st.ok()) {
                 // Not served: do not keep a deployment that cannot load.
                 (void)deps->remove(stored.name, r.principal);
                 (void)s->remove(stored.name);
                 return st;
               }
               json j = stored;
               j["status"] = s->status(stored.name);
               return Response::json_body(j, 201);
             });
  router.add("GET", "/api/v1/deployments/{name}", Access::kRead,
             [s, deps](HttpRequest& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::Deployment d, deps->get(r.param("name")));
               json j = d;
               j["status"] = s->status(d.name);
               return Response::json_body(j);
             });
  router.add("PUT", "/api/v1/deployments/{name}", Access::kWrite,
             [s, deps](HttpRequest& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::Deployment d, deployment_from_body(r, r.param("name")));
               DLSYS_ASSIGN_OR_RETURN(meta::Deployment before, deps->get(d.name));
               // Until the update is stored, the store still holds `before`: the watcher must
               // not take that for a change and apply it again.
               d.updated_at = before.updated_at;
               // Load the new version first: when it fails, the stored deployment and what is
               // served stay as they were.
               DLSYS_RETURN_IF_ERROR(s->apply(d));
               auto stored = deps->update(d, r.principal);
               if (!stored.ok()) {
                 (void)s->apply(before);
                 return stored.status();
               }
               json j = *stored;
               j["status"] = s->status(d.name);
               return Response::json_body(j);
             });
  // Canary verbs: promote makes the canary the primary (an alias move when the deployment follows
  // an alias of its model), rollback drops it. Neither reloads the version that stays.
  router.add("POST", "/api/v1/deployments/{name}/promote", Access::kWrite,
             [s](HttpRequest& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::Deployment d, s->promote(r.param("name"), r.principal));
               json j = d;
               j["status"] = s->status(d.name);
               return Response::json_body(j);
             });
  router.add("POST", "/api/v1/deployments/{name}/rollback", Access::kWrite,
             [s](HttpRequest& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::Deployment d,
                                      s->rollback(r.param("name"), r.principal));
               json j = d;
               j["status"] = s->status(d.name);
               return Response::json_body(j);
             });
  router.add("DELETE", "/api/v1/deployments/{name}", Access::kWrite,
             [s, deps](HttpRequest& r) -> Result<Response> {
               DLSYS_RETURN_IF_ERROR(deps->remove(r.param("name"), r.principal));
               (void)s->remove(r.param("name"));
               return Response::json_body({{"deleted", r.param("name")}});
             });
}

}  // namespace dlsys::serve
