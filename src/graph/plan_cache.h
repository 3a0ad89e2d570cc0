// A PlanCache holds the Plans of one graph, one per input-shape signature, built on first use.
//
// Values at plan time: dlsys plans every shape before running, so a node whose output shape is
// a function of an input's *value* (Reshape's shape, Slice's starts, TopK's K, Loop's trip
// count) needs that value when it is planned. When the value comes from a graph input, the
// build fails naming it (Plan::build's `needed_inputs`); the cache then learns that input as
// "fixed": from then on its plans are keyed by that input's value too, and the value is a
// constant in them (an input of at most kMaxFixedElements elements; larger ones keep the
// error). Only the inputs a build asked for are fixed, so other small inputs (a [1, 10] batch
// row) do not multiply the plans.
//
// Threading: plan_for and plan_for_shapes are thread-safe; the Plans they return are not (one
// run at a time per plan). A returned Plan lives as long as the cache, except that the cache
// drops every plan when it holds kMaxPlans (value-keyed plans are unbounded otherwise): a
// caller runs the plan it got before asking for another.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "graph/plan.h"

namespace dlsys {

class PlanCache {
 public:
  // `g` must outlive the cache. `constants` (graph-input index -> value) are fixed in every
  // plan (a subgraph's inputs known when its node was planned).
  PlanCache(const Graph& g, PlanOptions opts, std::map<int, Tensor> constants = {});

  // The plan for these inputs' shapes and, for the inputs the graph needs at plan time, values.
  Result<Plan*> plan_for(const std::vector<Tensor>& inputs);
  // Same, from shapes alone: fails when the graph needs an input's value to be planned.
  Result<Plan*> plan_for_shapes(const std::vector<Shape>& shapes);
  // Number of plans held.
  size_t size();

  static constexpr int64_t kMaxFixedElements = 64;
  static constexpr size_t kMaxPlans = 256;

 private:
  std::string key_of(const std::vector<Shape>& shapes, const std::vector<Tensor>* values) const;
  Result<Plan*> build_locked(const std::string& key, const std::vector<Shape>& shapes,
                             const std::map<int, Tensor>& fixed, std::vector<int>* needed);

  const Graph& g_;
  const PlanOptions opts_;
  const std::map<int, Tensor> constants_;
  std::mutex mu_;
  std::set<int> fixed_;   // graph inputs whose values key the plans (learned)
  bool fix_all_ = false;  // a build needed a value it could not attribute: fix every small input
  std::map<std::string, std::unique_ptr<Plan>> plans_;
};

// True when `st` is the error of a build that needed a value at plan time
// (BuildContext::plan_time_value_missing), maybe inside a subgraph.
bool needs_plan_time_value(const Status& st);

}  // namespace dlsys
