// REST routes of the dataset manager under /api/v1/datasets: list, versions, a version's
// manifest, diff, drift of a sample of inputs, tags, pushing a file (the request body) as a
// new version, and pulling a version's rows as CSV. See docs/api.md.
#pragma once

#include "api/router.h"
#include "data/dataset_store.h"
#include "meta/meta_store.h"

namespace dlsys::api {

// `datasets` and `meta` (where lineage edges between versions go) must outlive the router.
void add_data_routes(Router& router, data::DatasetStore& datasets, meta::MetaStore& meta);

}  // namespace dlsys::api
