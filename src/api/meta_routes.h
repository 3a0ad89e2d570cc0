// REST routes of the tracking server and model registry under /api/v1 (docs/api.md).
#pragma once

#include <functional>

#include "api/router.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"

namespace dlsys::api {

// Adds experiments, runs, metrics, artifacts, models, aliases, lineage, audit and token routes.
// `store` and `objects` must outlive the router.
// `validate_model` (may be null) checks the ONNX file of a version before it is registered.
void add_meta_routes(Router& router, meta::MetaStore& store, meta::ArtifactStore& objects,
                     std::function<Status(const std::string& path)> validate_model);

}  // namespace dlsys::api
