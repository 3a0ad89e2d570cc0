// REST routes of the dataset manager under /api/v1/datasets: list, versions, a version's
// manifest, diff, drift of a sample of inputs, tags, pushing a file (the request body) as a
// new version, and pulling a version's rows as CSV. See docs/api.md.
#pragma once

#include "api/router.h"
#include "data/dataset_store.h"
#include "meta/lineage.h"

namespace dlsys::api {

// `datasets` and `lineage` (where the edges between versions go) must outlive the router.
void add_data_routes(Router& router, data::DatasetStore& datasets, meta::LineageStore& lineage);

}  // namespace dlsys::api
