// The model registry's routes: models, versions, their files and aliases (docs/api.md).
#include <cctype>

#include "api/meta_routes.h"
#include "api/request_util.h"
#include "core/file_util.h"

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
                     for (size_t at = m.find(file); at != std::string::npos;
                          at = m.find(file, at + path.size()))
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
  // A version from an ONNX file sent as the body, with no run (`dlsys models register --file`):
  // the file is checked by `validate_model` before anything is stored, and an error names it by
  // its artifact_path, never by a path on the server.
  router.add(
      "POST", "/api/v1/models/{name}/versions/upload", Access::kWrite,
      [s, obj, validate_model](Request& r) -> Result<Response> {
        const std::string& name = r.param("name");
        const std::string path = r.query_or("artifact_path", "model.onnx");
        const std::string desc = r.query_or("description", "");
        DLSYS_RETURN_IF_ERROR(meta::check_version_file_name(path));
        DLSYS_RETURN_IF_ERROR(s->get_model(name).status());
        // The body arrived as a file (HTTP, an in-process upload) or in memory (an in-process
        // call): either way a file under objects/tmp, which put_file takes or this removes.
        std::string tmp = r.body_file;
        if (tmp.empty()) {
          tmp = obj->temp_path();
          DLSYS_RETURN_IF_ERROR(write_file_atomic(tmp, r.body));
          r.body_file = tmp;  // the router removes it if this returns an error
        }
        if (validate_model) {
          Status valid = validate_model(tmp);
          if (!valid.ok()) {
            std::string m = valid.message();
            for (size_t at = m.find(tmp); at != std::string::npos;
                 at = m.find(tmp, at + path.size()))
              m.replace(at, tmp.size(), path);
            return Status(valid.code(),
                          fmt::format("'{}' is not a loadable ONNX model: {}", path, m));
          }
        }
        r.body_file.clear();
        DLSYS_ASSIGN_OR_RETURN(meta::StoredObject o, obj->put_file(tmp));
        DLSYS_ASSIGN_OR_RETURN(
            meta::ModelVersion v,
            s->create_file_version(name, path, o.sha256, o.size, desc, r.principal));
        return Response::json_body(v, 201);
      },
      /*body_to_file=*/true);
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
