// The admin routes: the audit log and API tokens (docs/api.md).
#include "api/meta_routes.h"
#include "api/request_util.h"

namespace dlsys::api {

void add_admin_routes(Router& router, meta::StoreDb& db, meta::TokenStore& tokens) {
  meta::StoreDb* d = &db;
  meta::TokenStore* s = &tokens;

  // Who the caller is: the UI offers only what the role may do. Any valid token may ask.
  const bool auth = router.auth_required();
  router.add("GET", "/api/v1/whoami", Access::kInfer, [auth](Request& r) -> Result<Response> {
    return Response::json_body(
        {{"name", r.principal.name}, {"role", meta::role_name(r.principal.role)}, {"auth", auth}});
  });

  // ---- audit and tokens (admin) ----
  router.add("GET", "/api/v1/audit", Access::kAdmin, [d](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int n, page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(meta::PageOf<meta::AuditRecord> p,
                           d->list_audit(n, r.query_or("page_token", "")));
    return page_response(p, "entries");
  });
  router.add("POST", "/api/v1/tokens", Access::kAdmin, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string name, string_field(b, "name", true));
    DLSYS_ASSIGN_OR_RETURN(std::string role, string_field(b, "role", true));
    DLSYS_ASSIGN_OR_RETURN(meta::Role rl, meta::parse_role(role));
    DLSYS_ASSIGN_OR_RETURN(meta::NewToken t, s->create_token(name, rl, r.principal));
    return Response::json_body(t, 201);
  });
  router.add("GET", "/api/v1/tokens", Access::kAdmin, [s](Request&) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(std::vector<meta::TokenInfo> t, s->list_tokens());
    return Response::json_body({{"tokens", t}});
  });
  router.add("DELETE", "/api/v1/tokens/{id}", Access::kAdmin, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "token id"));
    DLSYS_RETURN_IF_ERROR(s->revoke_token(id, r.principal));
    return Response::json_body({{"revoked", id}});
  });
}

}  // namespace dlsys::api
