// Lineage: typed edges between (kind, id) nodes; kinds are dataset_version, run, model_version
// and deployment. Thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "core/status.h"
#include "meta/auth.h"

namespace dlsys::meta {

class StoreDb;

class LineageStore {
 public:
  explicit LineageStore(StoreDb& db) : db_(db) {}

  // Adds (or relabels) the edge src -> dst with `relation` ("input", "produced", ...).
  Status add_edge(const std::string& src_kind, const std::string& src_id,
                  const std::string& dst_kind, const std::string& dst_id,
                  const std::string& relation, const Principal& who);
  // {"root":…, "nodes":[…], "edges":[…]}: everything upstream and downstream within `depth`.
  Result<json> graph(const std::string& kind, const std::string& id, int depth);

 private:
  StoreDb& db_;
};

}  // namespace dlsys::meta
