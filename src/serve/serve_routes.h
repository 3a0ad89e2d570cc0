// The serving routes on the dlsys server: the Open Inference Protocol (KServe v2 REST) under
// /v2, and deployments under /api/v1/deployments (docs/api.md, docs/serving.md).
#pragma once

#include "api/router.h"
#include "meta/meta_store.h"
#include "serve/model_server.h"

namespace dlsys::serve {

// Adds the routes. `server` and `store` must outlive the router's use.
//   GET  /v2, /v2/health/live, /v2/health/ready
//   GET  /v2/models/{name}[/versions/{v}][/ready]       metadata, readiness
//   POST /v2/models/{name}[/versions/{v}]/infer         JSON or binary tensors (inference role)
//   GET, POST /api/v1/deployments; GET, PUT, DELETE /api/v1/deployments/{name}
void add_serve_routes(api::Router& router, ModelServer& server, meta::MetaStore& store);

}  // namespace dlsys::serve
