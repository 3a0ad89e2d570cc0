// The model registry's routes: models, versions, their files and aliases (docs/api.md).
#include <cctype>

#include "api/meta_routes.h"
#include "api/request_util.h"

namespace dlsys::api {

void add_registry_routes(Router& router, meta::ModelRegistry& registry, meta::RunTracking& runs,
                         meta::ArtifactStore& objects,
                         std::function<Status(const std::string& path)> validate_model) {
  meta::ModelRegistry* s = &registry;
  meta::RunTracking* rt = &runs;
  meta::ArtifactStore* obj = &objects;

  // ---- model registry ----
  router.add("POST", "/api/v1/models", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string name, string_field(b, "name", true));
    DLSYS_ASSIGN_OR_RETURN(std::string desc, string_field(b, "description", false));
    DLSYS_ASSIGN_OR_RETURN(meta::Model m, s->create_model(name, desc, r.principal));
    return Response::json_body(m, 201);
  });
  router.add("GET", "/api/v1/models", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int n, page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(
        auto p, s->list_models(n, r.query_or("page_token", ""), r.query_or("name_like", ""),
                               r.query_or("order_by", "")));
    return page_response(p, "models");
  });
  router.add("GET", "/api/v1/models/{name}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(meta::Model m, s->get_model(r.param("name")));
    return Response::json_body(m);
  });
  router.add("POST", "/api/v1/models/{name}/versions", Access::kWrite,
             [s, rt, obj, validate_model](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
               DLSYS_ASSIGN_OR_RETURN(int64_t run, int_field(b, "run_id", true));
               DLSYS_ASSIGN_OR_RETURN(std::string path,
                                      string_field(b, "artifact_path", false, "model.onnx"));
               DLSYS_ASSIGN_OR_RETURN(std::string desc, string_field(b, "description", false));
               if (validate_model) {
                 // The artifact must exist and be a model dlsys can load before it is a version.
                 auto a = rt->get_artifact(run, path);
                 if (a.ok()) {
                   DLSYS_ASSIGN_OR_RETURN(std::string file, obj->open_verified(a->sha256));
                   Status valid = validate_model(file);
                   if (!valid.ok()) {
                     // The object store's path is the server's business: name the artifact.
                     std::string m = valid.message();
                     for (size_t at = m.find(file); at != std::string::npos; at = m.find(file, at))
                       m.replace(at, file.size(), path);
                     return Status(valid.code(), fmt::format("artifact '{}' of run {} is not a "
                                                             "loadable ONNX model: {}",
                                                             path, run, m));
                   }
                 }
               }
               DLSYS_ASSIGN_OR_RETURN(
                   meta::ModelVersion v,
                   s->create_model_version(r.param("name"), run, path, desc, r.principal));
               return Response::json_body(v, 201);
             });
  router.add("GET", "/api/v1/models/{name}/versions", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(auto v, s->list_model_versions(r.param("name")));
               return Response::json_body({{"versions", v}});
             });
  router.add("GET", "/api/v1/models/{name}/versions/{version}", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_int(r.param("version"), "version"));
               DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                                      s->get_model_version(r.param("name"), v));
               return Response::json_body(mv);
             });
  router.add("PATCH", "/api/v1/models/{name}/versions/{version}", Access::kWrite,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_int(r.param("version"), "version"));
               DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
               DLSYS_ASSIGN_OR_RETURN(std::string st, string_field(b, "status", true));
               DLSYS_ASSIGN_OR_RETURN(
                   meta::ModelVersion mv,
                   s->set_model_version_status(r.param("name"), v, st, r.principal));
               return Response::json_body(mv);
             });
  // The version's ONNX file; {version} may be a number or an alias ("production", "latest").
  router.add("GET", "/api/v1/models/{name}/versions/{version}/artifact", Access::kInfer,
             [s, obj](Request& r) -> Result<Response> {
               const std::string& ver = r.param("version");
               meta::ModelVersion mv;
               if (!ver.empty() && std::isdigit(static_cast<unsigned char>(ver[0]))) {
                 DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_int(ver, "version"));
                 DLSYS_ASSIGN_OR_RETURN(mv, s->get_model_version(r.param("name"), v));
               } else {
                 DLSYS_ASSIGN_OR_RETURN(mv, s->get_version_by_alias(r.param("name"), ver));
               }
               meta::ArtifactRecord a{mv.artifact_path, mv.sha256, mv.size};
               DLSYS_ASSIGN_OR_RETURN(std::string file, obj->open_verified(a.sha256));
               Response resp = file_response(file, a);
               resp.headers.push_back({"X-Model-Version", std::to_string(mv.version)});
               return resp;
             });
  router.add("PUT", "/api/v1/models/{name}/aliases/{alias}", Access::kWrite,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
               DLSYS_ASSIGN_OR_RETURN(int64_t v, int_field(b, "version", true));
               DLSYS_ASSIGN_OR_RETURN(
                   meta::AliasMove a,
                   s->set_alias(r.param("name"), r.param("alias"), v, r.principal));
               return Response::json_body(a);
             });
  router.add("GET", "/api/v1/models/{name}/aliases/{alias}", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                                      s->get_version_by_alias(r.param("name"), r.param("alias")));
               return Response::json_body(mv);
             });
  router.add(
      "DELETE", "/api/v1/models/{name}/aliases/{alias}", Access::kWrite,
      [s](Request& r) -> Result<Response> {
        DLSYS_RETURN_IF_ERROR(s->delete_alias(r.param("name"), r.param("alias"), r.principal));
        return Response::json_body({{"deleted", true}});
      });
}

}  // namespace dlsys::api
