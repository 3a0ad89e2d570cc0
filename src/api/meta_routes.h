// REST routes of the tracking server and model registry under /api/v1 (docs/api.md).
#pragma once

#include "api/router.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"

namespace dlsys::api {

// Adds experiments, runs, metrics, artifacts, models, aliases, lineage, audit and token routes.
// `store` and `objects` must outlive the router.
void add_meta_routes(Router& router, meta::MetaStore& store, meta::ArtifactStore& objects);

}  // namespace dlsys::api
