// Static facts about a model for `dlsys inspect`: inputs/outputs, op histogram, parameters and
// estimated FLOPs per sample (from a plan built with every symbolic dimension set to 1).
#pragma once

#include <map>
#include <string>

#include "graph/plan.h"

namespace dlsys {

struct ModelInfo {
  // Every node's op, those inside subgraphs (If's branches, Loop's and Scan's bodies) too.
  std::map<std::string, int> op_histogram;
  int subgraph_nodes = 0;       // how many of them are inside subgraphs
  int64_t parameters = 0;       // elements of floating-point initializers
  int64_t parameter_bytes = 0;  // bytes of all initializers
  double flops_per_sample = 0;  // multiply-add = 2 FLOPs; elementwise ops count 1 per output
  bool flops_known = false;
  std::string flops_error;  // why flops are unknown
};

// Estimated FLOPs of one planned node (0 for nodes folded at plan time).
double node_flops(const PlannedNode& n);
// Gathers ModelInfo; `plan` (built at batch 1) may be null, then FLOPs are unknown (they count
// the top-level graph's planned nodes: a subgraph's work depends on how often it runs).
ModelInfo model_info(const Graph& g, const Plan* plan);

}  // namespace dlsys
