// DeadNodeElimination: nodes no graph output depends on, and unused initializers.
#include <set>

#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

int eliminate_dead_nodes(Graph* g, OptimizeReport* report) {
  std::set<std::string> live;
  for (const ValueInfo& o : g->outputs) live.insert(o.name);
  int n = 0;
  for (size_t k = g->nodes.size(); k-- > 0;) {
    Node& node = g->nodes[k];
    bool needed = false;
    for (const std::string& o : node.outputs) needed = needed || (!o.empty() && live.count(o));
    if (!needed) {
      note_rewrite(report,
                   fmt::format("removed {} '{}' (no output is used)", node.op_type, node.name));
      node.op_type.clear();
      ++n;
      continue;
    }
    for (const std::string& in : node.inputs)
      if (!in.empty()) live.insert(in);
  }
  compact(g);
  for (auto it = g->initializers.begin(); it != g->initializers.end();) {
    if (!live.count(it->first))
      it = g->initializers.erase(it);
    else
      ++it;
  }
  return n;
}

}  // namespace dlsys
