// IdentityElimination: Identity, and Dropout in inference, rewired away.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

int eliminate_identities(Graph* g, OptimizeReport* report) {
  GraphUses uses(*g);
  int n = 0;
  for (Node& node : g->nodes) {
    bool identity = node.op_type == "Identity";
    if (node.op_type == "Dropout") {
      // Inference Dropout is the identity when its mask is unused and training_mode is off.
      bool mask_used = node.outputs.size() > 1 && !node.outputs[1].empty() &&
                       (uses.uses(node.outputs[1]) > 0 || uses.is_graph_output(node.outputs[1]));
      bool training = false;
      if (node.inputs.size() > 2 && !node.inputs[2].empty()) {
        const Tensor* t = initializer(*g, node.inputs[2]);
        training = !t || t->numel() != 1 || t->get_i64(0) != 0;
      }
      identity = !mask_used && !training;
    }
    if (!identity || node.inputs.empty() || node.inputs[0].empty()) continue;
    const std::string& out = node.outputs[0];
    if (uses.is_graph_output(out)) continue;  // keep the graph's output name
    replace_uses(g, out, node.inputs[0]);
    note_rewrite(report, fmt::format("removed {} '{}'", node.op_type, node.name));
    node.op_type.clear();
    ++n;
  }
  compact(g);
  return n;
}

}  // namespace dlsys
