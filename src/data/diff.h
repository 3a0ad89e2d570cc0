// Comparing dataset versions: rows added and removed (by row hash, reading only the __row
// column of the shards the two versions do not share), schema changes, and drift of the
// column statistics; and drift of a sample of inputs (serving will send these) against a
// version.
#pragma once

#include "data/dataset_store.h"
#include "data/stats.h"

namespace dlsys::data {

// {"from": "digits@v1", "to": "digits@v2", "rows": {"from":..,"to":..,"added":..,"removed":..},
//  "schema": {"added":[..],"removed":[..],"changed":[{"name","from","to"}]}, "drift": {...}}
Result<json> diff_versions(const DatasetStore& store, const VersionInfo& from,
                           const VersionInfo& to, const DriftThresholds& thresholds);

// Drift of `sample` ({"column": [values...], ...}, numbers or strings, null for missing) against
// the statistics of `reference`. Columns unknown to the version are errors.
Result<json> drift_of_sample(const VersionInfo& reference, const json& sample,
                             const DriftThresholds& thresholds);

}  // namespace dlsys::data
