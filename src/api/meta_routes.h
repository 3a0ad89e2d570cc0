// REST routes of the tracking server and model registry under /api/v1 (docs/api.md), one file
// per concept of the metadata store: run_routes.cpp (experiments, runs, metrics, artifacts),
// registry_routes.cpp (models, versions, aliases), lineage_routes.cpp, admin_routes.cpp (audit
// log, tokens). The stores and `objects` passed in must outlive the router.
#pragma once

#include <functional>
#include <string>

#include "api/router.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"

namespace dlsys::api {

// Adds the health check and every route below, in this order.
// `validate_model` (may be null) checks the ONNX file of a version before it is registered.
void add_meta_routes(Router& router, meta::MetaStore& store, meta::ArtifactStore& objects,
                     std::function<Status(const std::string& path)> validate_model);

// Experiments, runs (create, search, read, update, log-batch), metric histories, run artifacts.
void add_run_routes(Router& router, meta::RunTracking& runs, meta::ArtifactStore& objects);
// Models, versions (created from a run's artifact, checked by `validate_model`), the version's
// file (by number or alias) and aliases.
void add_registry_routes(Router& router, meta::ModelRegistry& registry, meta::RunTracking& runs,
                         meta::ArtifactStore& objects,
                         std::function<Status(const std::string& path)> validate_model);
// Adding lineage edges and reading the graph around a node.
void add_lineage_routes(Router& router, meta::LineageStore& lineage);
// The audit log and API tokens (admin only).
void add_admin_routes(Router& router, meta::StoreDb& db, meta::TokenStore& tokens);

// Helpers the route files share: a page as {key: items, "next_page_token"?} (items through
// their to_json), and a file answer with its X-Content-SHA256.
template <typename T>
Response page_response(const meta::PageOf<T>& page, const char* key) {
  json j = json::object();
  j[key] = page.items;
  if (!page.next_page_token.empty()) j["next_page_token"] = page.next_page_token;
  return Response::json_body(j);
}
Response file_response(const std::string& path, const meta::ArtifactRecord& a);

}  // namespace dlsys::api
