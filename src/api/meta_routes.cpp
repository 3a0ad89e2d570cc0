#include "api/meta_routes.h"

namespace dlsys::api {

Response file_response(const std::string& path, const meta::ArtifactRecord& a) {
  Response r;
  r.file_path = path;
  r.content_type = "application/octet-stream";
  r.headers.push_back({"X-Content-SHA256", a.sha256});
  return r;
}

void add_meta_routes(Router& router, meta::MetaStore& store, meta::ArtifactStore& objects,
                     std::function<Status(const std::string& path)> validate_model) {
  meta::MetaStore* s = &store;
  router.add("GET", "/api/v1/health", Access::kPublic, [s](Request&) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t v, s->db().schema_version());
    return Response::json_body(
        {{"status", "ok"},
         {"schema_version", v},
         {"meta", s->db().dialect() == meta::SqlDialect::kSqlite ? "sqlite" : "postgresql"}});
  });
  add_run_routes(router, store.runs(), objects);
  add_registry_routes(router, store.registry(), store.runs(), objects, std::move(validate_model));
  add_lineage_routes(router, store.lineage());
  add_admin_routes(router, store.db(), store.tokens());
}

}  // namespace dlsys::api
