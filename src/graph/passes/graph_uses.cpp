#include "graph/passes/graph_uses.h"

#include <algorithm>

namespace dlsys {

GraphUses::GraphUses(const Graph& g) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op_type.empty()) continue;
    for (const std::string& o : n.outputs)
      if (!o.empty()) producer_[o] = static_cast<int>(i);
    for (const std::string& in : n.inputs)
      if (!in.empty()) consumers_[in].push_back(static_cast<int>(i));
  }
  for (const ValueInfo& o : g.outputs) outputs_.insert(o.name);
}

int GraphUses::producer(const std::string& value) const {
  auto it = producer_.find(value);
  return it == producer_.end() ? -1 : it->second;
}

int GraphUses::uses(const std::string& value) const {
  auto it = consumers_.find(value);
  return it == consumers_.end() ? 0 : static_cast<int>(it->second.size());
}

std::vector<int> GraphUses::consumers(const std::string& value) const {
  auto it = consumers_.find(value);
  if (it == consumers_.end()) return {};
  std::vector<int> v = it->second;
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

void compact(Graph* g) {
  g->nodes.erase(std::remove_if(g->nodes.begin(), g->nodes.end(),
                                [](const Node& n) { return n.op_type.empty(); }),
                 g->nodes.end());
}

void replace_uses(Graph* g, const std::string& from, const std::string& to) {
  for (Node& n : g->nodes)
    for (std::string& in : n.inputs)
      if (in == from) in = to;
}

const Tensor* initializer(const Graph& g, const std::string& value) {
  auto it = g.initializers.find(value);
  return it == g.initializers.end() ? nullptr : &it->second;
}

bool scalar_value(const Graph& g, const std::string& value, double* out) {
  const Tensor* t = initializer(g, value);
  if (!t || t->numel() != 1 || !dtype_is_float(t->dtype()) || t->dtype() == DType::kF64)
    return false;
  *out = t->get_f64(0);
  return true;
}

std::string fresh_name(const Graph& g, const std::string& base) {
  auto taken = [&](const std::string& n) {
    if (g.initializers.count(n)) return true;
    for (const ValueInfo& v : g.inputs)
      if (v.name == n) return true;
    for (const Node& node : g.nodes) {
      if (node.name == n) return true;
      for (const std::string& o : node.outputs)
        if (o == n) return true;
    }
    return false;
  };
  if (!taken(base)) return base;
  for (int i = 1;; ++i) {
    std::string n = base + "_" + std::to_string(i);
    if (!taken(n)) return n;
  }
}

}  // namespace dlsys
