// REST routes of the dataset manager under /api/v1/datasets: list, versions, a version's
// manifest, diff, drift of a sample of inputs, tags, pushing a file (the request body) or a
// staged upload of several files as a new version, and pulling a version's rows as CSV or its
// shards. See docs/api.md.
#pragma once

#include "api/router.h"
#include "data/dataset_store.h"
#include "data/upload_staging.h"
#include "meta/lineage.h"

namespace dlsys::api {

// `datasets`, `uploads` (staged pushes) and `lineage` (where the edges between versions go) must
// outlive the router.
void add_data_routes(Router& router, data::DatasetStore& datasets, data::UploadStaging& uploads,
                     meta::LineageStore& lineage);

}  // namespace dlsys::api
