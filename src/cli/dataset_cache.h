// The local cache of a server's dataset versions, for the commands that read a version through a
// server (`dlsys train --server` with data.dataset, `dlsys predict --server`): DATA_DIR/cache/
// <host>_<port>, holding a dataset store (datasets/) and an index (index/<server's version id> ->
// the local version id). Shards are fetched once and checked against their SHA-256.
#pragma once

#include <string>

#include "api/client.h"
#include "core/status.h"
#include "data/dataset_store.h"

namespace dlsys::cli {

// The cache folder of the server at `url` (its datasets/ and index/ are under it).
std::string cache_dir_of(const std::string& url);

// Copies the version `ref` names on the server into the cache store `cache` (shards the cache
// lacks are fetched and checked against their SHA-256; nothing is fetched again for a version
// already copied). Returns the cached version; `*server_label` is the server's "digits@v3".
Result<data::VersionInfo> cache_server_version(api::ApiClient& c, data::DatasetStore& cache,
                                               const std::string& index_dir,
                                               const data::VersionRef& ref,
                                               std::string* server_label);

}  // namespace dlsys::cli
