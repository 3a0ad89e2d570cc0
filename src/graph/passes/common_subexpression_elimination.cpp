// CommonSubexpressionElimination: nodes with the same op, inputs and attributes merged.
#include <unordered_map>

#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {
namespace {

// A byte string identifying an attribute map, for CSE.
std::string attrs_key(const AttributeMap& attrs) {
  std::string k;
  for (const auto& [name, a] : attrs) {
    k += name;
    k += fmt::format("#{}:{}:{}:{}:", static_cast<int>(a.kind), a.f, a.i, a.s);
    for (int64_t v : a.ints) k += fmt::format("{},", v);
    k += ";";
    for (float v : a.floats) k += fmt::format("{},", v);
    k += ";";
    for (const std::string& v : a.strings) k += v + "\x1f";
    if (a.t.valid()) {
      k += fmt::format("t{}{}", static_cast<int>(a.t.dtype()), shape_str(a.t.shape()));
      if (a.t.dtype() == DType::kString) {
        for (int64_t i = 0; i < a.t.numel(); ++i) k += a.t.strings()[i] + "\x1f";  // not pointers
      } else {
        k.append(static_cast<const char*>(a.t.data()), a.t.nbytes());
      }
    }
    if (a.kind == Attribute::Kind::kGraph || a.kind == Attribute::Kind::kOther)
      k += fmt::format("@{}", static_cast<const void*>(&a));  // never equal
    k += "\x1e";
  }
  return k;
}

}  // namespace

int eliminate_common_subexpressions(Graph* g, OptimizeReport* report) {
  int n = 0;
  std::unordered_map<std::string, int> seen;
  GraphUses uses(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& node = g->nodes[i];
    if (node.op_type.empty() || nondeterministic(node.op_type)) continue;
    std::string key = node.domain + "|" + node.op_type + "|";
    for (const std::string& in : node.inputs) key += in + "\x1f";
    key += "|" + attrs_key(node.attrs);
    auto [it, fresh] = seen.emplace(key, static_cast<int>(i));
    if (fresh) continue;
    const Node& first = g->nodes[it->second];
    bool outputs_ok = first.outputs.size() == node.outputs.size();
    for (size_t k = 0; outputs_ok && k < node.outputs.size(); ++k)
      outputs_ok = !uses.is_graph_output(node.outputs[k]) &&
                   (node.outputs[k].empty() || !first.outputs[k].empty());
    if (!outputs_ok) continue;
    for (size_t k = 0; k < node.outputs.size(); ++k)
      if (!node.outputs[k].empty()) replace_uses(g, node.outputs[k], first.outputs[k]);
    note_rewrite(report, fmt::format("merged {} '{}' into '{}' (same inputs and attributes)",
                                     node.op_type, node.name, first.name));
    node.op_type.clear();
    ++n;
  }
  compact(g);
  return n;
}

}  // namespace dlsys
