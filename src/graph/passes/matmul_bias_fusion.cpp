// MatMulBiasFusion: MatMul by a constant 2-D weight + Add of a 1-D constant -> FusedMatMul.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

int fuse_matmul_bias(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& add = g->nodes[i];
    if (add.op_type != "Add" || add.inputs.size() != 2) continue;
    for (int k = 0; k < 2; ++k) {
      Node* mm = single_use_producer(g, u, add.inputs[k], "MatMul");
      const Tensor* bias = initializer(*g, add.inputs[1 - k]);
      if (!mm || !bias || bias->rank() != 1 || bias->dtype() != DType::kF32) continue;
      const Tensor* w = constant_weight(*g, u, mm->inputs[1]);
      if (!w || w->rank() != 2 || w->dim(1) != bias->numel()) continue;
      note_rewrite(report, fmt::format("fused MatMul '{}' + bias Add '{}' into FusedMatMul",
                                       mm->name, add.name));
      std::string b = add.inputs[1 - k];
      mm->inputs.push_back(b);
      merge_into(g, mm, i, add.outputs);
      ++n;
      u = GraphUses(*g);
      break;
    }
  }
  compact(g);
  return n;
}

}  // namespace dlsys
