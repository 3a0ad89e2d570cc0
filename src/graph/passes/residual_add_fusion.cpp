// ResidualAddFusion: Conv/MatMul/Gemm + Add of a run-time value -> Fused*(..., Z).
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

int fuse_residual_add(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& add = g->nodes[i];
    if (add.op_type != "Add" || add.inputs.size() != 2 || add.inputs[0] == add.inputs[1]) continue;
    for (int k = 0; k < 2; ++k) {
      int pi = u.producer(add.inputs[k]);
      if (pi < 0 || !u.single_use(add.inputs[k])) continue;
      Node* p = &g->nodes[pi];
      if (!fusable_producer(p->op_type) || p->attrs.count("activation") || p->inputs.size() > 3 ||
          p->outputs.size() != 1)
        continue;
      std::string z = add.inputs[1 - k];
      if (initializer(*g, z)) continue;  // a constant addend is a bias, not a residual
      note_rewrite(report, fmt::format("fused residual Add '{}' into {} '{}'", add.name, p->op_type,
                                       p->name));
      p->inputs.resize(3);
      p->inputs.push_back(z);
      merge_into(g, p, i, add.outputs);
      ++n;
      u = GraphUses(*g);
      break;
    }
  }
  compact(g);
  return n;
}

}  // namespace dlsys
