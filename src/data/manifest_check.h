// The shape of a version manifest and of its statistics, checked once where they are read from
// disk (DatasetStore::read_manifest), so every reader after it (the CLI, the routes, diff,
// export, the loader) may index the fields docs/formats.md names without a further check. A
// manifest is named by the SHA-256 of its bytes, so a malformed one can only come from a damaged
// or hand-edited store; the error says which field, in which version, is wrong.
#pragma once

#include <string_view>

#include "data/schema.h"

namespace dlsys::data {

// Checks a manifest (format dlsys.dataset/1, docs/formats.md): "rows" (a non-negative integer),
// "created_ms" (an integer), "parent" (null or a string), "author" and "message" (strings when
// present), "schema.columns" (objects with a string "name" and "type", an integer "shape" when
// present), "shards" (objects with a 64-hex "id", non-negative integer "rows" and "bytes"),
// "split" when present ("rows" with integer train/validation/test, "key" null or a string),
// "source" when present (an object). Statistics, when present under "stats", go through
// check_stats. `label` ("digits@v3") names the version in the error.
Status check_manifest(const json& manifest, std::string_view label);

// Checks column statistics: an object of objects, each with integer "count" and "nulls" when
// present, numbers for "min", "max", "mean" and "std" when present, "quantiles" of exactly 101
// numbers, "histogram" with number "edges" and integer "counts" (one fewer), and "top" as
// objects with a string "value" and an integer "count".
Status check_stats(const json& stats, std::string_view label);

}  // namespace dlsys::data
