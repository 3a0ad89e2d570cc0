// The lineage routes: add an edge, read the graph around a node (docs/api.md).
#include "api/meta_routes.h"
#include "api/request_util.h"

namespace dlsys::api {

void add_lineage_routes(Router& router, meta::LineageStore& lineage) {
  meta::LineageStore* s = &lineage;

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
    DLSYS_RETURN_IF_ERROR(s->add_edge(sk, si, dk, di, rel, r.principal));
    return Response::json_body({{"src", b["src"]}, {"dst", b["dst"]}, {"relation", rel}}, 201);
  });
  router.add(
      "GET", "/api/v1/lineage/{kind}/{id...}", Access::kRead, [s](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(int64_t depth, parse_int(r.query_or("depth", "10"), "depth"));
        DLSYS_ASSIGN_OR_RETURN(meta::LineageGraph g,
                               s->graph(r.param("kind"), r.param("id"), static_cast<int>(depth)));
        return Response::json_body(g);
      });
}

}  // namespace dlsys::api
