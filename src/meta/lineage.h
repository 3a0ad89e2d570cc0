// Lineage: typed edges between (kind, id) nodes; kinds are dataset_version, run, model_version,
// deployment and pipeline_run. Thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "meta/auth.h"

namespace dlsys::meta {

class StoreDb;

// A node of the lineage graph: "dataset_version" "digits@v3", "run" "7", "model_version"
// "digits/2", "deployment" "<name>".
struct LineageNode {
  std::string kind;
  std::string id;
};

// A typed edge: src -> dst with `relation` ("input", "produced", ...).
struct LineageEdge {
  LineageNode src;
  LineageNode dst;
  std::string relation;
};

// Everything upstream and downstream of `root` within a depth. Each node appears once, with the
// direction it was first reached in: "root", "upstream" or "downstream".
struct LineageGraph {
  LineageNode root;
  std::vector<std::pair<LineageNode, std::string>> nodes;  // (node, direction)
  std::vector<LineageEdge> edges;
};

// {"root": {"kind","id"}, "nodes": [{"kind","id","direction"}], "edges": [{"src","dst",
// "relation"}]} (docs/api.md).
void to_json(json& j, const LineageGraph& g);

class LineageStore {
 public:
  explicit LineageStore(StoreDb& db) : db_(db) {}

  // Adds (or relabels) the edge src -> dst with `relation` ("input", "produced", ...).
  Status add_edge(const std::string& src_kind, const std::string& src_id,
                  const std::string& dst_kind, const std::string& dst_id,
                  const std::string& relation, const Principal& who);
  // Everything upstream and downstream of (kind, id) within `depth` (1..100) edges.
  Result<LineageGraph> graph(const std::string& kind, const std::string& id, int depth);

 private:
  StoreDb& db_;
};

}  // namespace dlsys::meta
